"""Pretraining the built-in tiny model from scratch on the docstring corpus.

A plain torch loop (AdamW, linear warmup then cosine decay, fp32) rather than the `dataforge train`
recipe: this is next-token pretraining of every weight on packed raw text, not instruction tuning
of an adapter on templated records. Everything that can vary is seeded, so the same config, corpus
and library versions on the same thread count give the same weights.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from dataforge.config.base import StrictModel
from dataforge.tiny.corpus import CORPUS_FILE, read_corpus, split_corpus
from dataforge.util.fingerprint import library_versions, sha256_file


class PretrainConfig(StrictModel):
    steps: int = Field(250, ge=1, description="Optimizer steps.")
    seq_len: int = Field(512, ge=16, le=2048, description="Tokens per packed training sequence.")
    batch_size: int = Field(8, ge=1, description="Sequences per step.")
    learning_rate: float = Field(3e-3, gt=0, le=1, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(20, ge=0, description="Linear warmup steps before the cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (not applied to norms).")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    seed: int = Field(0, description="Seed for initialisation and batch order.")
    threads: int | None = Field(None, ge=1, description="torch threads; default: the CPU cores available to this process.")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def pack_documents(docs: list[list[int]], seq_len: int, bos_id: int, eos_id: int):
    """One `[n, seq_len]` tensor of `<s> doc </s>` token streams laid end to end.

    Packing wastes no compute on padding; the tail that does not fill a whole block is dropped (less
    than one block of a corpus of hundreds).
    """
    import torch

    stream: list[int] = []
    for ids in docs:
        stream.append(bos_id)
        stream.extend(ids)
        stream.append(eos_id)
    n = len(stream) // seq_len
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Multiplier of the peak rate at `step` (0-based): linear warmup, then cosine down to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def perplexity(model: Any, blocks: Any, batch_size: int = 8) -> float:
    """exp(mean next-token loss) over every predicted token of `blocks` ([n, len] token ids)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            batch = blocks[i:i + batch_size]
            logits = model(input_ids=batch).logits[:, :-1]
            targets = batch[:, 1:]
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum").item()
            count += targets.numel()
    return math.exp(total / count)


def _param_groups(model: Any, weight_decay: float) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


StepCallback = Callable[[int, float, float], None]  # (step, loss, tokens per second)


def pretrain(cfg: PretrainConfig, corpus_path: str | Path = CORPUS_FILE,
             on_step: StepCallback | None = None) -> tuple[Any, Any, dict]:
    """Train the tokenizer and the model on the corpus train part.

    Returns (model, tokenizer, build_info); build_info holds the figures that show the run worked:
    held-out perplexity of the random init and of the trained model, measured on the same blocks.
    """
    import torch

    from dataforge.tiny.architecture import init_model
    from dataforge.tiny.tokenizer import train_tokenizer

    started = time.perf_counter()
    threads = cfg.threads or available_cores()
    torch.set_num_threads(threads)
    train_docs, heldout_docs = split_corpus(read_corpus(corpus_path))
    tokenizer = train_tokenizer(d.text for d in train_docs)

    def encode(docs):
        return tokenizer([d.text for d in docs], add_special_tokens=False)["input_ids"]

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    train_blocks = pack_documents(encode(train_docs), cfg.seq_len, bos, eos)
    heldout_blocks = pack_documents(encode(heldout_docs), cfg.seq_len, bos, eos)
    model = init_model(tokenizer, cfg.seed)
    ppl_init = perplexity(model, heldout_blocks)

    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                                  betas=(0.9, 0.95), eps=1e-8)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    order = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(train_blocks), generator=order)
    cursor, epochs, tokens_seen, loss_value = 0, 0, 0, float("nan")
    train_started = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(perm):
            perm, cursor, epochs = torch.randperm(len(train_blocks), generator=order), 0, epochs + 1
        batch = train_blocks[perm[cursor:cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += batch.numel()
        loss_value = loss.item()
        if on_step is not None:
            on_step(step + 1, loss_value, tokens_seen / (time.perf_counter() - train_started))
    train_seconds = time.perf_counter() - train_started
    ppl_trained = perplexity(model, heldout_blocks)
    model.eval()
    info = {
        "config": cfg.model_dump(),
        "threads": threads,
        "steps": cfg.steps,
        "tokens_seen": tokens_seen,
        "epochs": round(tokens_seen / train_blocks.numel(), 3),
        "final_train_loss": round(loss_value, 4),
        "corpus": {
            "file": Path(corpus_path).name,
            "sha256": sha256_file(corpus_path),
            "train_documents": len(train_docs),
            "heldout_documents": len(heldout_docs),
            "train_tokens": int(train_blocks.numel()),
            "heldout_tokens": int(heldout_blocks.numel()),
        },
        "heldout_perplexity": {"random_init": round(ppl_init, 2), "trained": round(ppl_trained, 2),
                               "seq_len": cfg.seq_len},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "tokens_per_second": round(tokens_seen / train_seconds, 1),
        "versions": library_versions(),
    }
    return model, tokenizer, info
