"""Two CPU processes (torch.distributed, gloo) train exactly like one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys

from train_helpers import ENV, read_log, read_manifest, run_cli, write_config


def test_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path, build_run):
    # Dropout off: each process draws its own dropout masks, so only the dropout-free path can match.
    common = {"lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    two = tmp_path / "two"
    cfg2 = write_config(tmp_path / "two.yaml", build_run, two,
                        train={"learning_rate": 2e-3, "max_steps": 4, "batch_size": 2, "grad_accum": 2}, **common)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "dataforge", "train", str(cfg2), "-q"],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]

    one = tmp_path / "one"
    cfg1 = write_config(tmp_path / "one.yaml", build_run, one,
                        train={"learning_rate": 2e-3, "max_steps": 4, "batch_size": 4, "grad_accum": 2}, **common)
    res1 = run_cli("train", str(cfg1), "-q")
    assert res1.returncode == 0, res1.stderr[-3000:]

    m2, m1 = read_manifest(two), read_manifest(one)
    assert m2["world_size"] == 2 and m2["distributed"]["backend"] == "gloo"
    assert m1["world_size"] == 1
    log2, log1 = read_log(two), read_log(one)
    assert len(log2) == len(log1)  # one writer: only the main process logs
    for a, b in zip(log2, log1, strict=True):
        assert a["step"] == b["step"]
        for key in ("loss", "tokens", "trained_tokens", "eval_domain_loss", "eval_general_loss"):
            if key in b:
                assert abs(a[key] - b[key]) < 1e-4, (a["step"], key, a[key], b[key])
