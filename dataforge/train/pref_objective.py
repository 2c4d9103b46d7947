"""The preference objectives (dpo, kto, reward) as the training loop sees them: batches in, per-pair
losses and metrics out, and the per-source eval on the val split.

The DPO/KTO reference is the base model with the adapter switched off (peft's `disable_adapter()`),
so it costs a second no-grad forward pass but no second copy of the weights. The reward model is the
base with a scalar head (`AutoModelForSequenceClassification`, one label) under LoRA, scored at the
last real token of prompt + completion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dataforge.train.config import TrainConfig
from dataforge.train.pref_data import make_kto_batch, make_pair_batch, pair_lengths
from dataforge.train.pref_loss import bradley_terry_losses, dpo_losses, kto_losses, sequence_logps

# Per-pair metrics logged as step means (train_log.jsonl) and as eval means (eval_<name>).
METRICS = ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "logps_chosen", "logps_rejected")


@dataclass
class PrefOut:
    losses: Any                         # one loss per pair (or completion), with grad
    metrics: dict[str, Any]             # name -> tensor [pairs], detached
    sft_nll: Any = 0.0                  # summed NLL of the chosen tokens (the RPO term's numerator)
    sft_tokens: int = 0
    extra: dict = field(default_factory=dict)


def _inputs(batch, device) -> dict:
    return {k: v.to(device) for k, v in batch.inputs.items()}


def _logps(model, batch, device):
    out = model(**_inputs(batch, device), use_cache=False)
    return sequence_logps(out.logits, batch.shift_labels)


def _reference_logps(model, batch, device):
    """The same forward pass with the adapter off: the base model is the reference."""
    import torch

    with torch.no_grad(), model.disable_adapter():
        out = model(**_inputs(batch, device), use_cache=False)
    return sequence_logps(out.logits, batch.shift_labels)[0]


class DpoObjective:
    name = "dpo"

    def __init__(self, cfg: TrainConfig):
        self.p = cfg.preference

    lengths = staticmethod(pair_lengths)
    make_batch = staticmethod(make_pair_batch)

    def forward(self, model, unwrapped, pb, device) -> PrefOut:
        logps, counts, token_logps = _logps(model, pb.batch, device)
        ref = _reference_logps(unwrapped, pb.batch, device)
        n = pb.pairs
        losses, r_c, r_r = dpo_losses(logps[:n], logps[n:], ref[:n], ref[n:], beta=self.p.beta,
                                      loss_type=self.p.loss_type, label_smoothing=self.p.label_smoothing,
                                      chosen_tokens=counts[:n], rejected_tokens=counts[n:])
        metrics = {"reward_accuracy": (r_c > r_r).double(), "reward_margin": r_c - r_r, "reward_chosen": r_c,
                   "reward_rejected": r_r, "logps_chosen": logps[:n].detach(), "logps_rejected": logps[n:].detach()}
        sft = -token_logps[:n].sum() if self.p.rpo_alpha else 0.0
        return PrefOut(losses, metrics, sft, int(counts[:n].sum()))


class RewardObjective:
    name = "reward"

    def __init__(self, cfg: TrainConfig):
        self.p = cfg.preference

    lengths = staticmethod(pair_lengths)
    make_batch = staticmethod(make_pair_batch)

    def forward(self, model, unwrapped, pb, device) -> PrefOut:
        scores = model(**_inputs(pb.batch, device), use_cache=False).logits[:, 0].float()
        n = pb.pairs
        chosen, rejected = scores[:n], scores[n:]
        losses = bradley_terry_losses(chosen, rejected)
        c, r = chosen.detach(), rejected.detach()
        return PrefOut(losses, {"reward_accuracy": (c > r).double(), "reward_margin": c - r,
                                "reward_chosen": c, "reward_rejected": r})


class KtoObjective:
    name = "kto"

    def __init__(self, cfg: TrainConfig):
        self.p = cfg.preference

    @staticmethod
    def lengths(dataset):
        from dataforge.train.data import sequence_lengths

        return sequence_lengths(dataset)

    make_batch = staticmethod(make_kto_batch)

    def forward(self, model, unwrapped, kb, device) -> PrefOut:
        import torch

        logps, _, _ = _logps(model, kb.batch, device)
        ref = _reference_logps(unwrapped, kb.batch, device)
        with torch.no_grad():
            kl_policy = _logps(model, kb.kl_batch, device)[0]
            kl_ref = _reference_logps(unwrapped, kb.kl_batch, device)
            kl = (kl_policy - kl_ref).mean().clamp(min=0)
        desirable = kb.desirable.to(device)
        losses, rewards = kto_losses(logps, ref, desirable, kl, beta=self.p.beta,
                                     desirable_weight=self.p.kto_desirable_weight,
                                     undesirable_weight=self.p.kto_undesirable_weight)
        return PrefOut(losses, {"reward_desirable": torch.where(desirable, rewards, torch.nan),
                                "reward_undesirable": torch.where(desirable, torch.nan, rewards),
                                "kl": kl.expand_as(rewards).double()})


OBJECTIVES = {"dpo": DpoObjective, "reward": RewardObjective, "kto": KtoObjective}


def make_objective(cfg: TrainConfig):
    return OBJECTIVES[cfg.objective.value](cfg)


def _nanmean_sums(values) -> tuple[Any, Any]:
    import torch

    ok = ~torch.isnan(values)
    return torch.where(ok, values, 0).double().sum(), ok.double().sum()


def preference_step(run, accelerator, batches: list, cfg: TrainConfig, step: int, objective, checkpoints=None):
    """One optimizer step of a preference objective: the loss is the mean per-pair loss over every pair of
    the step on all processes, plus rpo_alpha x the mean NLL per chosen token; clip, step, schedule.

    Returns (counts, loss, grad_norm, metrics): counts as `train_step` returns them plus the step's pairs
    (all processes), metrics the step means of the per-pair metrics.
    """
    import contextlib

    import torch

    from dataforge.train.loop import apply_update

    model, world, device = run.model, accelerator.num_processes, accelerator.device
    unwrapped = accelerator.unwrap_model(model)
    counts = torch.tensor([sum(b.tokens for b in batches), sum(b.trained_tokens for b in batches),
                           sum(b.positions for b in batches), sum(b.pairs for b in batches)],
                          dtype=torch.float64, device=device)
    counts = accelerator.reduce(counts, reduction="sum")
    pairs_global = max(counts[3].item(), 1.0)
    alpha = cfg.preference.rpo_alpha if objective.name == "dpo" else 0.0
    model.train()
    sums: dict[str, list] = {}
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    sft_sum = torch.zeros(2, dtype=torch.float64, device=device)
    if alpha:  # the SFT term is normalized by the chosen tokens of the whole step: count them first
        chosen = sum(int((b.batch.shift_labels[:b.pairs] != -100).sum()) for b in batches)
        chosen_global = max(accelerator.reduce(torch.tensor(float(chosen), device=device), reduction="sum").item(), 1.0)
    for i, b in enumerate(batches):
        sync = i == len(batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            out = objective.forward(model, unwrapped, b, device)
            loss = out.losses.sum() * world / pairs_global
            if alpha:
                loss = loss + alpha * out.sft_nll * world / chosen_global
                sft_sum[0] += out.sft_nll.detach().double()
                sft_sum[1] += out.sft_tokens
            accelerator.backward(loss * cfg.train.grad_accum)
        loss_sum += out.losses.detach().double().sum()
        for k, v in out.metrics.items():
            s, c = _nanmean_sums(v)
            sums.setdefault(k, [0.0, 0.0])
            sums[k][0] += s
            sums[k][1] += c
    loss_sum = accelerator.reduce(loss_sum, reduction="sum")
    step_loss = loss_sum.item() / pairs_global
    if alpha:
        sft_sum = accelerator.reduce(sft_sum, reduction="sum")
        step_loss += alpha * sft_sum[0].item() / max(sft_sum[1].item(), 1.0)
    metrics = {}
    for k, (s, c) in sorted(sums.items()):
        pair = accelerator.reduce(torch.stack([torch.as_tensor(s, device=device), torch.as_tensor(c, device=device)]).double(),
                                  reduction="sum")
        if pair[1].item():
            metrics[k] = pair[0].item() / pair[1].item()
    grad_norm = apply_update(run, accelerator, cfg, step, step_loss, checkpoints)
    return counts.cpu(), step_loss, grad_norm, metrics


def preference_eval(model, data, accelerator, batch_size: int, pad_id: int, objective) -> dict[str, float]:
    """Mean loss and per-pair metrics on the val split, overall and per source (`eval_<source>_loss`).

    Pairs are dealt round-robin to the processes; a process one pair short re-runs a pair with zero
    weight, so every process makes the same number of forward passes.
    """
    import numpy as np
    import torch

    val = data.val
    if val is None:
        return {}
    sources = sorted(set(val["source"]))
    names = ["loss", *[m for m in METRICS if objective.name == "dpo" or not m.startswith("logps")]]
    if objective.name == "kto":
        names = ["loss", "reward_desirable", "reward_undesirable", "kl"]
    world, rank = accelerator.num_processes, accelerator.process_index
    order = np.argsort(objective.lengths(val), kind="stable")
    per_rank = math.ceil(len(order) / world)
    mine = list(order[rank::world])
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine += [order[0]] * (per_rank - len(mine))
    # [metric, source, (sum, count)]
    sums = torch.zeros(len(names), len(sources), 2, dtype=torch.float64, device=accelerator.device)
    unwrapped = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, per_rank, batch_size):
            idx = mine[start:start + batch_size]
            b = objective.make_batch(val, idx, pad_id, data.pad_to_multiple_of)
            out = objective.forward(model, unwrapped, b, accelerator.device)
            w = torch.tensor(weights[start:start + batch_size], dtype=torch.float64, device=accelerator.device)
            cols = torch.tensor([sources.index(s) for s in b.sources], device=accelerator.device)
            values = {"loss": out.losses.detach().double(), **out.metrics}
            for m, name in enumerate(names):
                v = values[name].double()
                ok = (~torch.isnan(v)).double() * w
                sums[m, :, 0].index_add_(0, cols, torch.where(torch.isnan(v), 0, v) * ok)
                sums[m, :, 1].index_add_(0, cols, ok)
    if was_training:
        model.train()
    sums = accelerator.reduce(sums, reduction="sum")
    out: dict[str, float] = {}
    for m, name in enumerate(names):
        total, count = sums[m, :, 0].sum().item(), sums[m, :, 1].sum().item()
        out[f"eval_{name}"] = total / count if count else float("nan")
        for s, src in enumerate(sources):
            c = sums[m, s, 1].item()
            if name in ("loss", "reward_accuracy"):
                out[f"eval_{src}_{name}"] = sums[m, s, 0].item() / c if c else float("nan")
    return out
