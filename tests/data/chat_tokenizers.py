"""Byte-level BPE tokenizers trained here, in a second, on text of our own, carrying chat templates
shaped like the ones users bring: ChatML (Qwen: turns end with `<|im_end|>`, which is also its eos)
and Gemma's (turns end with `<end_of_turn>`; the eos `<eos>` is another token). The tiny tokenizer's
own template ends turns with eos, which hides the case where the turn end is not eos."""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('this template has no system role') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_TEXT = [
    "The greenhouse pump alarm E14 means the reservoir float is low; top it up before the night cycle.",
    "Calibrate the pH probe with the 7.0 buffer, rinse it, then check against the 4.0 buffer.",
    "Lettuce wants an EC near 1.2 mS/cm, tomatoes closer to 2.5; keep the water near 20 C.",
    "Pourquoi la pompe s'arrête-t-elle ? Vérifiez le flotteur et le filtre d'entrée.",
    "<think>The reading is high, so the acid line is probably empty.</think> Refill the acid tote.",
    "Which schedule suits basil? Sixteen hours of light, then eight of dark, every day.",
]


@cache
def chat_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """`chatml` or `gemma`: a trained byte-level BPE with that template and its special tokens."""
    specials = {"chatml": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
                "gemma": ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]}[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_TEXT * 4, trainer)
    if style == "chatml":
        out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      additional_special_tokens=["<|im_start|>"])
        out.chat_template = CHATML_TEMPLATE
    else:
        out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                      additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
        out.chat_template = GEMMA_TEMPLATE
    out.name_or_path = f"trained-{style}"
    return out
