"""Token losses, for the training objective and for the per-source eval loss.

The loss is computed here from the logits rather than by the model's `labels=` path, so training
and eval share one definition: the sum of token negative log-likelihoods, divided by the number
of trained tokens of the whole optimizer step (all micro-batches, all processes). Averaging per
micro-batch instead would weight short batches up and make the loss depend on the batch split.
"""

from __future__ import annotations

import math

from dataforge.train.data import IGNORE_INDEX, Batch, TrainData, make_batch


def token_nll(logits, shift_labels):
    """Per-token negative log-likelihood [batch, seq], zero where the label is ignored.

    Prompt-learning methods (prompt tuning, p-tuning) prepend virtual tokens to the logits; only
    the positions of the real tokens are scored.
    """
    import torch.nn.functional as F

    seq = shift_labels.shape[1]
    logits = logits[:, -seq:, :].float()
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shift_labels.reshape(-1).to(logits.device),
                          ignore_index=IGNORE_INDEX, reduction="none")
    return nll.view(shift_labels.shape)


def batch_nll(model, batch: Batch, device):
    """Per-token NLL of one batch. The KV cache is off: with a cache object present, transformers
    skips the packed-sequence detection and packed records would attend to each other."""
    inputs = {k: v.to(device) for k, v in batch.inputs.items()}
    return token_nll(model(**inputs, use_cache=False).logits, batch.shift_labels.to(device))


def eval_loss_by_source(model, data: TrainData, accelerator, batch_size: int, pad_id: int) -> dict[str, float]:
    """Token-weighted mean loss on the val split, overall and per source (`eval_<source>_loss`).

    Records are sorted by length (little padding) and dealt round-robin to the processes. Every
    process runs the same number of forward passes, re-running a record with zero weight where it
    has one record fewer, so the collective calls inside distributed models stay matched.
    """
    import numpy as np
    import torch

    from dataforge.train.data import sequence_lengths

    val = data.val
    if val is None:
        return {}
    sources = sorted(set(val["source"]))
    index = {s: i for i, s in enumerate(sources)}
    order = np.argsort(sequence_lengths(val), kind="stable")
    world, rank = accelerator.num_processes, accelerator.process_index
    per_rank = math.ceil(len(order) / world)
    mine = list(order[rank::world])
    weights = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
    mine += [order[0]] * (per_rank - len(mine))

    sums = torch.zeros(2, len(sources), dtype=torch.float64, device=accelerator.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, per_rank, batch_size):
            batch = make_batch(val, mine[start:start + batch_size], pad_id, data.pad_to_multiple_of, packed=False)
            nll = batch_nll(model, batch, accelerator.device).sum(dim=1).double()
            count = (batch.shift_labels != IGNORE_INDEX).sum(dim=1).double().to(accelerator.device)
            w = torch.tensor(weights[start:start + batch_size], dtype=torch.float64, device=accelerator.device)
            cols = torch.tensor([index[s] for s in batch.sources], device=accelerator.device)
            sums[0].index_add_(0, cols, nll * w)
            sums[1].index_add_(0, cols, count * w)
    if was_training:
        model.train()
    sums = accelerator.reduce(sums, reduction="sum")
    nll_total, tok_total = sums[0].sum().item(), sums[1].sum().item()
    out = {"eval_loss": nll_total / tok_total if tok_total else float("nan")}
    for s, i in index.items():
        tokens = sums[1, i].item()
        out[f"eval_{s}_loss"] = sums[0, i].item() / tokens if tokens else float("nan")
    return out
