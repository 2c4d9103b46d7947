"""The data order: every record once per epoch, the same on resume, and the same whatever the process count."""

from __future__ import annotations

import numpy as np
import pytest

from dataforge.train.batching import MicroBatchPlan, epoch_batches, rank_share


def _lengths(n=203, seed=0):
    return np.random.default_rng(seed).integers(5, 300, size=n)


@pytest.mark.parametrize("grouped", [True, False])
def test_an_epoch_holds_every_record_exactly_once(grouped):
    lengths = _lengths()
    batches = epoch_batches(lengths, 8, seed=1, epoch=0, length_grouped=grouped)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert sum(len(b) == 8 for b in batches) == len(lengths) // 8


def test_order_depends_only_on_seed_and_epoch():
    lengths = _lengths()
    a = epoch_batches(lengths, 8, seed=1, epoch=2, length_grouped=True)
    b = epoch_batches(lengths, 8, seed=1, epoch=2, length_grouped=True)
    c = epoch_batches(lengths, 8, seed=1, epoch=3, length_grouped=True)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def _padding_fraction(lengths, batches) -> float:
    positions = sum(len(b) * lengths[b].max() for b in batches)
    return 1 - lengths.sum() / positions


def test_length_grouping_cuts_padding():
    lengths = _lengths(2000)
    grouped = _padding_fraction(lengths, epoch_batches(lengths, 16, seed=0, epoch=0, length_grouped=True))
    shuffled = _padding_fraction(lengths, epoch_batches(lengths, 16, seed=0, epoch=0, length_grouped=False))
    assert grouped < 0.1 < shuffled


def test_processes_together_see_what_one_process_sees_with_the_global_batch():
    lengths = _lengths()
    one = MicroBatchPlan(lengths, batch_size=8, world_size=1, grad_accum=2, seed=4, length_grouped=True,
                         epochs=2.0, max_steps=None)
    two = MicroBatchPlan(lengths, batch_size=4, world_size=2, grad_accum=2, seed=4, length_grouped=True,
                         epochs=2.0, max_steps=None)
    assert one.total_steps == two.total_steps == np.ceil(2 * np.ceil(203 / 8) / 2)
    for m in range(one.total_micro):
        together = np.concatenate([two.records(m, 0), two.records(m, 1)])
        assert sorted(together.tolist()) == sorted(one.records(m, 0).tolist())


def test_a_short_final_batch_still_gives_every_process_work():
    batch, first = np.array([7]), np.array([3, 4, 5])
    assert [rank_share(batch, r, 3, first).tolist() for r in range(3)] == [[7], [3], [4]]


def test_steps_are_whole_accumulations_and_epochs_round_up_to_a_step():
    plan = MicroBatchPlan(_lengths(50), batch_size=4, world_size=1, grad_accum=3, seed=0, length_grouped=False,
                          epochs=1.0, max_steps=None)
    assert plan.per_epoch == 13 and plan.total_steps == 5 and plan.total_micro == 15
    assert list(plan.step_micro_batches(4)) == [12, 13, 14]
    capped = MicroBatchPlan(_lengths(50), batch_size=4, world_size=1, grad_accum=3, seed=0, length_grouped=False,
                            epochs=1.0, max_steps=9)
    assert capped.total_steps == 9 and capped.total_micro == 27
    # micro-batches 13..25 are the second epoch: every record once, in an order of its own
    second = np.concatenate([capped.records(m, 0) for m in range(13, 26)])
    assert sorted(second.tolist()) == list(range(50))
    assert not np.array_equal(second, np.concatenate([capped.records(m, 0) for m in range(13)]))
