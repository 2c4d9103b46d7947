"""Shape of the built-in tiny Llama.

Small enough to ship in the repo (about 4.5M parameters, under 20 MB in fp32) and to train on two
CPU cores, but a real `LlamaForCausalLM`, so every code path (LoRA targets, QLoRA, chat templates,
generation, vLLM) is the one a large model takes. Hidden and intermediate sizes are multiples of 32
because the bitsandbytes CPU 4-bit kernels need that; the context is 2048 tokens because 25-shot
leaderboard prompts are long.
"""

from __future__ import annotations

from typing import Any

HIDDEN_SIZE = 256
INTERMEDIATE_SIZE = 768
NUM_LAYERS = 4
NUM_HEADS = 4
NUM_KV_HEADS = 4
MAX_POSITIONS = 2048


def tiny_llama_config(tokenizer: Any):
    """LlamaConfig whose vocabulary and special-token ids come from `tokenizer`."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        hidden_act="silu",
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        attention_bias=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def init_model(tokenizer: Any, seed: int):
    """A randomly initialised model; the same seed gives the same weights."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=256,
    )
    return model
