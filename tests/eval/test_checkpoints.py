"""`--adapter 'run/checkpoints/*'`: every checkpoint scored from one model load, in step order, and
the base re-run with other seeds for the noise floor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import dataforge.models as models
from dataforge.config.base import validate_config
from dataforge.errors import ConfigError
from dataforge.eval.config import EvalConfig
from dataforge.eval.evaluate import evaluate
from dataforge.eval.noise import noise_floor
from dataforge.eval.results import load_results


def _checkpoints(root):
    """A train run's checkpoints as `dataforge train` writes them (state + adapter/), unpadded steps so
    that only a natural sort puts 9 before 10, and the hidden folder a killed save leaves."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(models.load_causal_lm("tiny"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                     init_lora_weights=False))
    for step, scale in ((10, 1.0), (9, 0.5)):
        with torch.no_grad():      # an earlier step has moved the weights less far
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.mul_(scale)
        model.save_pretrained(str(root / f"checkpoint-{step}" / "adapter"))
        (root / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"step": step}))
    (root / ".checkpoint-11.tmp").mkdir()


def test_a_glob_scores_every_checkpoint_from_one_load_in_step_order(tmp_path, monkeypatch):
    _checkpoints(tmp_path / "run" / "checkpoints")
    loads = []
    real = models.load_causal_lm
    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: loads.append(a) or real(*a, **k))
    opts = {"limit": 2, "n_boot": 100, "cache_dir": str(tmp_path / "cache"), "progress": False, "device": "cpu"}
    cfg = EvalConfig(suite="leaderboard", model="tiny", tasks=["truthfulqa_mc2"], history=False, options=opts,
                     out=tmp_path / "ckpts", adapters=[str(tmp_path / "run" / "checkpoints" / "*")],
                     base_out=tmp_path / "base", noise_seeds=[7])
    assert cfg.adapters == [str(tmp_path / "run" / "checkpoints" / f"checkpoint-{s}" / "adapter") for s in (9, 10)]
    _, run = evaluate(cfg)
    assert len(loads) == 1
    assert run.folders == [tmp_path / "base", tmp_path / "ckpts" / "checkpoint-9", tmp_path / "ckpts" / "checkpoint-10",
                           tmp_path / "base-seed7"]
    base, nine, ten, rerun = (load_results(f) for f in run.folders)
    assert nine.manifest["adapter"].endswith("checkpoint-9/adapter") and ten.manifest["adapter"].endswith("checkpoint-10/adapter")
    assert nine.rows("truthfulqa_mc2") != ten.rows("truthfulqa_mc2")
    # the re-run ran the model again (the cache was bypassed) with its own seed; loglikelihoods are
    # deterministic, so the noise floor of these scores is exactly 0 while the bootstrap CI moves
    assert rerun.manifest["noise_of"] == str(tmp_path / "base") and rerun.manifest["options"]["seed"] == 7
    assert [r["ll"] for r in rerun.rows("truthfulqa_mc2")] == [r["ll"] for r in base.rows("truthfulqa_mc2")]
    spread = noise_floor(base, [rerun])["truthfulqa_mc2", "mc2"]
    assert spread.spread == 0 and spread.values[0] == base.value("truthfulqa_mc2", "mc2")
    with pytest.raises(Exception, match="not a re-run of the base"):
        noise_floor(base, [ten])


def test_a_glob_that_matches_nothing_or_a_folder_without_an_adapter_is_a_clear_error(tmp_path):
    common = {"suite": "leaderboard", "model": "tiny", "out": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match=r"matches no folder \(quote the pattern"):
        validate_config(EvalConfig, {**common, "adapters": [str(tmp_path / "nothing" / "*")]}, "eval")
    (tmp_path / "ckpt" / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"checkpoint-4 \(matched by .*\) holds no adapter_config.json"):
        validate_config(EvalConfig, {**common, "adapters": [str(tmp_path / "ckpt" / "*")]}, "eval")
    res = subprocess.run([sys.executable, "-m", "dataforge", "eval", "leaderboard", "-m", "tiny", "-o", str(tmp_path / "o"),
                          "--adapter", str(tmp_path / "ckpt" / "*")], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 2 and "holds no adapter_config.json" in res.stderr and "Traceback" not in res.stderr
