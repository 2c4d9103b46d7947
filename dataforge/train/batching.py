"""Which records go into which micro-batch, on which process: a pure function of (seed, epoch, position).

The order is never held in a sampler's hidden state. Micro-batch `m` of the run is recomputed from
the seed, so a resumed run skips exactly the micro-batches already trained on and sees the same
order as an uninterrupted run, whatever the number of processes.

A *global* micro-batch holds `batch_size * world_size` records; process `rank` trains on every
`world_size`-th of them, so all processes together see the same records as a single process with
the global batch size.
"""

from __future__ import annotations

import math

import numpy as np

MEGABATCH_FACTOR = 50


def epoch_batches(lengths: np.ndarray, global_batch: int, seed: int, epoch: int,
                  length_grouped: bool) -> list[np.ndarray]:
    """The global micro-batches of one epoch; every record appears in exactly one of them.

    Length grouping (as in Hugging Face's LengthGroupedSampler): shuffle, cut into mega-batches of
    50 batches, sort each mega-batch by length, cut into batches, then shuffle the batch order. A
    batch then holds records of similar length (little padding), while the epoch stays random.
    """
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if length_grouped:
        mega = global_batch * MEGABATCH_FACTOR
        chunks = [order[i:i + mega] for i in range(0, n, mega)]
        order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks]) if chunks else order
    batches = [order[i:i + global_batch] for i in range(0, n, global_batch)]
    if length_grouped and len(batches) > 1:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def rank_share(batch: np.ndarray, rank: int, world_size: int, epoch_first: np.ndarray) -> np.ndarray:
    """This process's records of a global micro-batch.

    A short final batch is topped up from the start of the epoch (as DistributedSampler does) so
    that no process is left without work, which would stall the others at the gradient all-reduce.
    """
    if len(batch) < world_size:
        batch = np.concatenate([batch, epoch_first[: world_size - len(batch)]])
    return batch[rank::world_size]


class MicroBatchPlan:
    """The run's sequence of micro-batches over epochs, and how they group into optimizer steps."""

    def __init__(self, lengths: np.ndarray, batch_size: int, world_size: int, grad_accum: int, seed: int,
                 length_grouped: bool, epochs: float, max_steps: int | None):
        if len(lengths) == 0:
            raise ValueError("no training records")
        self.lengths = np.asarray(lengths)
        self.global_batch = batch_size * world_size
        self.world_size, self.grad_accum, self.seed = world_size, grad_accum, seed
        self.length_grouped = length_grouped
        self.per_epoch = math.ceil(len(self.lengths) / self.global_batch)
        # Every step is exactly grad_accum micro-batches (DeepSpeed only steps at a full accumulation),
        # so a run of N epochs ends on the step that completes them, borrowing from the next epoch.
        self.total_steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * self.per_epoch / grad_accum))
        self.total_micro = self.total_steps * grad_accum
        self._cached: tuple[int, list[np.ndarray]] = (-1, [])

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._cached[0] != epoch:
            self._cached = (epoch, epoch_batches(self.lengths, self.global_batch, self.seed, epoch, self.length_grouped))
        return self._cached[1]

    def epoch_of(self, micro: int) -> float:
        return micro / self.per_epoch

    def step_micro_batches(self, step: int) -> range:
        """Indices of the micro-batches that make up optimizer step `step` (0-based)."""
        return range(step * self.grad_accum, (step + 1) * self.grad_accum)

    def records(self, micro: int, rank: int) -> np.ndarray:
        """Record indices that process `rank` trains on in micro-batch `micro`."""
        epoch, pos = divmod(micro, self.per_epoch)
        batches = self._epoch(epoch)
        return rank_share(batches[pos], rank, self.world_size, batches[0])
