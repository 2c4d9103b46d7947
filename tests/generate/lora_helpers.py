"""A real LoRA adapter for the tiny model, trained in a few seconds: enough steps at a high learning
rate that greedy answers to the prompts below change, which is all a serving test needs."""

from __future__ import annotations

from pathlib import Path

# Our own instruction/answer pairs, shaped like a domain tune's data (short factual answers).
PAIRS = [
    ("What does the pump alarm mean?", "The pump alarm means the water level is too low."),
    ("How do I check soil pH?", "Mix soil with distilled water and read the strip after one minute."),
    ("Name a fruit that grows on vines.", "Grapes grow on vines."),
    ("When should the filter be changed?", "Change the filter every three months."),
    ("What is the boiling point of water?", "Water boils at one hundred degrees at sea level."),
    ("Who repairs the irrigation line?", "The field team repairs the irrigation line on Mondays."),
]
PROMPTS = [f"### Instruction:\n{q}\n\n### Response:\n" for q, _ in PAIRS] + [
    f"### Instruction:\n{q}\n\n### Response:\n" for q in (
        "Describe the pump.", "What grows in the field?", "List three tools for the garden.",
        "Why does the alarm sound at night?", "Write one sentence about water.", "How long is a season?",
        "Explain the filter.", "What is soil made of?", "Give a tip for the team.", "Summarize the manual.")]


def train_tiny_adapter(out: Path, steps: int = 40, rank: int = 8, seed: int = 0) -> Path:
    """Train LoRA (q, k, v, o, MLP) on the pairs for `steps` full-batch steps and save it to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from dataforge.models import load_causal_lm, load_tokenizer

    torch.manual_seed(seed)
    tok = load_tokenizer("tiny")
    model = load_causal_lm("tiny", device="cpu")
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"]))
    texts = [p + a + tok.eos_token for p, (_, a) in zip(PROMPTS[:len(PAIRS)], PAIRS, strict=True)]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(str(out))
    return out
