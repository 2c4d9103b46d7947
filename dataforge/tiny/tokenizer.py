"""The built-in model's tokenizer: byte-level BPE trained locally on the corpus train part.

Byte-level means every string, in any script, round-trips exactly, so the tokenizer never produces
`<unk>` and tests can compare decoded text with the input. It behaves like a Llama tokenizer where
the rest of dataforge relies on it: BOS is prepended by default, EOS ends every assistant turn of
the chat template, and padding uses a dedicated `<pad>` token (never EOS, so masking pads cannot
mask real end-of-turn tokens).
"""

from __future__ import annotations

from collections.abc import Iterable

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3 in this order
VOCAB_SIZE = 4096
MODEL_MAX_LENGTH = 2048

# Turn markers are plain text (not special tokens): a template is data, and any tokenizer can
# render it. Every assistant turn ends with EOS so a tuned model learns to stop.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '### System:\n' + message['content'] | trim + '\n\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '### User:\n' + message['content'] | trim + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '### Assistant:\n' }}"
    "{% generation %}{{ message['content'] | trim + eos_token }}{% endgeneration %}"
    "{{ '\n\n' }}"
    "{% else %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = VOCAB_SIZE):
    """A `PreTrainedTokenizerFast` with a byte-level BPE vocabulary learnt from `texts`.

    BPE training in `tokenizers` is deterministic for a given input order and vocab size, so the
    same corpus always gives the same vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Prepend BOS like Llama; `add_special_tokens=False` turns it off as usual.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0",
            pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
            special_tokens=[(BOS, bos_id)],
        ),
    ])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
