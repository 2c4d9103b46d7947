"""Forgetting, measured while it happens: tuning on domain data alone raises the loss on general text,
and mixing general data into the train split (through the build's mix step) raises it less."""

from __future__ import annotations

import json

from train_helpers import demo_pipeline

from dataforge.config.base import validate_config
from dataforge.train.config import TrainConfig
from dataforge.train.loop import train


def _tune(pipe, out, mix) -> tuple[dict, dict]:
    cfg = validate_config(TrainConfig, {
        "seed": 1, "output": str(out), "data": {"path": str(pipe), "mix": mix},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "train": {"learning_rate": 3e-3, "max_steps": 16, "batch_size": 4},
        "eval": {"at_start": True, "every_steps": 8, "batch_size": 16},
    })
    stats = train(cfg, show_progress=False).manifest["stats"]
    start = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    return start, stats


def test_general_loss_rises_on_domain_only_data_and_less_with_general_mixed_in(tmp_path, tiny_model_ready):
    pipe = demo_pipeline(tmp_path)
    start, domain_only = _tune(pipe, tmp_path / "domain", {"domain": 1.0, "general": 0.0})
    _, mixed = _tune(pipe, tmp_path / "mixed", {"domain": 0.8, "general": 0.2})

    assert start["step"] == 0
    for run in (domain_only, mixed):
        assert run["final_eval_domain_loss"] < start["eval_domain_loss"] - 0.2   # both learn the domain
    assert domain_only["final_eval_general_loss"] > start["eval_general_loss"] + 0.2  # forgetting
    rise_alone = domain_only["final_eval_general_loss"] - start["eval_general_loss"]
    rise_mixed = mixed["final_eval_general_loss"] - start["eval_general_loss"]
    assert rise_mixed < rise_alone - 0.15, (rise_alone, rise_mixed)

    # the log shows it while it happens: general loss at the mid-run eval is already above the start
    mid = [json.loads(line) for line in (tmp_path / "domain" / "train_log.jsonl").read_text().splitlines()
           if '"eval_loss"' in line]
    assert [r["step"] for r in mid] == [0, 8, 16]
    assert mid[1]["eval_general_loss"] > start["eval_general_loss"]
