"""The GPU check's scripts, run in their CPU smoke mode so they cannot rot between GPU loans.

`benchmarks/bench_gpu.py --smoke` goes through the same training step, scoring and generation code
as on the GPU, at toy shapes; its JSON is checked against figures computed here from the shapes.
The FSDP round trip runs without FSDP on CPU (accelerate selects FSDP only for GPU processes), so the
config file is checked by accelerate's own launcher parsing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}

# The smoke shape (bench_gpu.SMOKE_SHAPE): hidden 64, 2 layers, 4 heads of 16, 2 kv heads, MLP 128, vocab 4096.
H, LAYERS, KV, MLP, VOCAB, R = 64, 2, 2 * 16, 128, 4096, 16


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=ROOT)


def test_smoke_run_reports_every_method_with_figures_that_match_the_shapes(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("bench_gpu.py", "--smoke", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["smoke"] is True and result["targets"] == {} and result["peak_tflops"] is None
    assert 0.8 < result["pack_fill"] <= 1.0

    per_layer = 2 * H * H + 2 * H * KV + 3 * H * MLP              # q, o; k, v; gate, up, down
    matmul = LAYERS * per_layer + VOCAB * H                         # + the tied output head
    adapter = LAYERS * R * (2 * H + 2 * H + 2 * (H + KV) + 3 * (H + MLP))
    rows = {r["method"]: r for r in result["train"]}
    assert sorted(rows) == ["full", "lora", "qlora"]
    for method, r in rows.items():
        assert r["matmul_params"] == matmul
        expected = 6 * matmul if method == "full" else 4 * matmul + 6 * adapter
        assert r["flops_per_token"] == expected
        assert r["mfu"] is None and r["model_memory_bytes"] is None  # GPU-only figures
        assert r["tokens_per_s"] > r["trained_tokens_per_s"] > 0
        # a third of each record is a masked prompt, and each record's first target is masked too
        assert 0.5 < r["trained_tokens_per_s"] / r["tokens_per_s"] < 0.7
        assert r["peak_memory_bytes"] > 0
        # a randomly initialised model predicts close to uniformly: loss ~ ln(vocab)
        assert abs(r["loss_first"] - math.log(VOCAB)) < 0.05 and math.isfinite(r["loss_last"])
        assert r["precision"] == "fp32"                             # precision auto on CPU
    assert rows["lora"]["adapter_params"] == rows["qlora"]["adapter_params"] == adapter
    assert rows["full"]["params_trainable"] == rows["full"]["params_total"]
    assert rows["qlora"]["quantized_layers"] == 7 * LAYERS and rows["lora"]["quantized_layers"] == 0
    assert rows["qlora"]["optimizer"] == "adamw"                    # paged AdamW needs CUDA

    (score,), (gen,) = result["score"], result["generate"]
    assert score["requests"] == 8 * 4 and score["requests_per_s"] > 0
    assert abs(score["mean_ll_per_token"] + math.log(VOCAB)) < 0.1
    assert 0 < gen["new_tokens"] <= gen["prompts"] * 8 and gen["tokens_per_s"] > 0
    assert "MC scoring" in proc.stdout and "lora" in proc.stdout


def test_checkpoint_round_trip_continues_the_loss_exactly(tmp_path):
    out = tmp_path / "roundtrip.json"
    proc = _run("gpu_fsdp_roundtrip.py", "--smoke", "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["ok"] and result["resumed_at"] == 3 and len(result["resumed_losses"]) == 3
    assert result["resumed_losses"] == result["losses"][3:]
    assert result["max_abs_difference"] == 0.0


def test_the_fsdp_config_launches_fsdp2_with_sharded_checkpoints(monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = ROOT / "pipelines" / "accelerate" / "fsdp.yaml"
    args = launch_command_parser().parse_args(["--config_file", str(config), "--num_processes", "1", "x.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    assert args.use_fsdp and env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    assert str(config.relative_to(ROOT)) in (ROOT / "README.md").read_text(encoding="utf-8")
