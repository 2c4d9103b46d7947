"""Preference tuning on the tiny model, on the bundled demo pairs: DPO makes the held-out chosen answers
win over the rejected ones, and a Bradley-Terry reward model ranks them above chance.

The held-out numbers are computed here independently of the training loop: the saved adapter is
loaded with peft as a user would load it, each pair is scored with and without the adapter, and the
confidence intervals come from a seeded bootstrap over the held-out pairs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dataforge.train.config import TrainConfig
from dataforge.train.loop import train
from tests.train.pref_rows import make_preference_run

MAX_LENGTH = 96


def bootstrap_ci(values: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@pytest.fixture(scope="module")
def pref_run(tmp_path_factory, tiny_model_ready):
    return make_preference_run(tmp_path_factory.mktemp("pref"), max_length=MAX_LENGTH)


def _config(run, out, objective: str, **train) -> TrainConfig:
    return TrainConfig(model="tiny", objective=objective, data={"path": str(run)}, output=str(out), seed=7,
                       lora={"r": 8, "alpha": 16, "dropout": 0.0},
                       train={"learning_rate": 3e-3, "max_steps": 8, "batch_size": 8, "warmup_steps": 1, **train},
                       eval={"at_start": False, "batch_size": 64}, checkpoint={"every_steps": 100},
                       preference={"beta": 0.1})


def _held_out_logps(adapter, val):
    """Summed completion log-probs of chosen and rejected, tuned (adapter on) and base (adapter off)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from dataforge.models import resolve_model

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model("tiny")), str(adapter)).eval()
    out = {}
    with torch.no_grad():
        for side in ("chosen", "rejected"):
            tuned, base = [], []
            for ids, labels in zip(val[f"{side}_input_ids"], val[f"{side}_labels"], strict=True):
                x, y = torch.tensor([ids]), torch.tensor(labels[1:])
                mask = y != -100
                for m, acc in ((model, tuned), (None, base)):
                    if m is None:
                        with model.disable_adapter():
                            logits = model(input_ids=x).logits[0, :-1]
                    else:
                        logits = m(input_ids=x).logits[0, :-1]
                    acc.append(logits.log_softmax(-1)[torch.arange(len(y))[mask], y[mask]].sum().item())
            out[side] = (np.array(tuned), np.array(base))
    return out


def test_dpo_raises_held_out_preference_accuracy_and_margin_over_the_base(pref_run, tmp_path):
    import datasets

    result = train(_config(pref_run, tmp_path / "dpo", "dpo"), show_progress=False)
    assert result.manifest["objective"] == "dpo" and result.manifest["stats"]["trained_pairs_per_s"] > 0
    log = [json.loads(x) for x in (tmp_path / "dpo" / "train_log.jsonl").read_text().splitlines()]
    assert {"reward_margin", "logps_chosen", "logps_rejected"} <= set(log[0])

    val = datasets.load_from_disk(str(pref_run / "tokenized"))["val"]
    s = _held_out_logps(tmp_path / "dpo" / "adapter", val)
    (c_tuned, c_base), (r_tuned, r_base) = s["chosen"], s["rejected"]
    base_margin, tuned_margin = c_base - r_base, c_tuned - r_tuned
    # Implicit reward (log-ratio of tuned over base): the base model scores every pair 0, a tie (0.5).
    implicit = tuned_margin - base_margin
    low, _ = bootstrap_ci((implicit > 0).astype(float))
    assert low > 0.5 + 0.2, f"held-out implicit-reward accuracy CI starts at {low:.3f}"
    low, _ = bootstrap_ci(implicit)
    assert low > 0, f"tuned-minus-base margin CI starts at {low:.3f} nats"
    # The train-time eval on the val split reports the same accuracy the independent computation gives.
    assert result.manifest["stats"]["final_eval_reward_accuracy"] == pytest.approx((implicit > 0).mean(), abs=1e-9)


def test_reward_model_ranks_held_out_pairs_above_chance(pref_run, tmp_path):
    import datasets

    from dataforge.train.reward_score import score_file
    from tests.train.pref_rows import demo_pairs

    result = train(_config(pref_run, tmp_path / "rm", "reward", learning_rate=2e-3, max_steps=10),
                   show_progress=False)
    assert result.manifest["objective"] == "reward"
    held = set(datasets.load_from_disk(str(pref_run / "tokenized"))["val"]["id"])
    pairs = [p for p in demo_pairs() if p["id"] in held]
    data = tmp_path / "completions.jsonl"
    data.write_text("".join(json.dumps({"instruction": p["instruction"], "input": p["input"],
                                        "completion": [p["chosen"], p["rejected"]]}) + "\n" for p in pairs))
    scored = score_file(tmp_path / "rm", data, best_of=True)
    # A pair whose chosen and rejected rows are cut to the same tokens by max_length scores a tie (0.5).
    correct = np.array([np.sign(r["rewards"][0] - r["rewards"][1]) / 2 + 0.5 for r in scored])
    assert [r["best_index"] for r in scored] == [0 if c >= 0.5 else 1 for c in correct]
    low, _ = bootstrap_ci(correct)
    assert low > 0.5, f"held-out reward-model accuracy {correct.mean():.3f}, CI starts at {low:.3f}"


def test_kto_on_labelled_completions_rewards_desirable_above_undesirable(tmp_path, tiny_model_ready):
    from tests.train.pref_rows import make_kto_run

    run = make_kto_run(tmp_path, max_length=MAX_LENGTH)
    result = train(_config(run, tmp_path / "kto-run", "kto"), show_progress=False)
    stats = result.manifest["stats"]
    assert result.manifest["objective"] == "kto"
    assert (tmp_path / "kto-run" / "adapter" / "adapter_model.safetensors").is_file()
    assert stats["final_eval_reward_desirable"] > stats["final_eval_reward_undesirable"], stats
