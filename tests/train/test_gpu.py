"""What only a CUDA device exercises: bf16 autocast, QLoRA's 4-bit CUDA path, paged optimizers, resuming.

They skip without CUDA. On the GPU host they run with nothing but the wheel bundle of `make gpu-check`
(no datasets, no polars): the data are packed rows made by the build's `pack_best_fit`, batched by
`batch_from_rows`, and trained by the loop's own `train_step`.

    pytest -m gpu tests/train/test_gpu.py
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

STEPS = 6
BATCH = 4


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test starts its own accelerator (precision differs between them)."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def rows(tiny_model_ready) -> list[dict]:
    """Packed rows of real text from the demo data, tokenized by the tiny tokenizer, the prompt half masked."""
    import json

    from dataforge.data.pack import pack_best_fit
    from dataforge.data.rows import IGNORE_INDEX
    from dataforge.models import load_tokenizer
    from dataforge.paths import DEMO_DATA_DIR

    tokenizer = load_tokenizer("tiny")
    ids, labels = [], []
    for line in (DEMO_DATA_DIR / "domain.jsonl").read_text(encoding="utf-8").splitlines()[:400]:
        try:
            record = json.loads(line)
            prompt, answer = str(record["instruction"]), str(record["output"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        p = tokenizer(prompt)["input_ids"][:96]
        a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"][:96] + [tokenizer.eos_token_id]
        ids.append(p + a)
        labels.append([IGNORE_INDEX] * len(p) + a)
    packed = pack_best_fit({"input_ids": ids, "labels": labels}, 256).table
    return packed.select(["input_ids", "labels", "position_ids"]).to_pylist()


def _config(method: str, **train):
    from dataforge.train.config import TrainConfig

    return TrainConfig(model="tiny", method=method, data={"path": "unused"}, seed=3,
                       lora={"r": 8, "alpha": 16, "dropout": 0.0},
                       train={"learning_rate": 2e-3, "max_steps": STEPS, "batch_size": BATCH, "warmup_steps": 1,
                              **train})


def _train(cfg, rows, start=0, stop=STEPS, save_at=None, checkpoints=None, resume_from=None):
    """Steps [start, stop) through the loop's own set-up and step, each on the same packed batch (so
    the loss must fall); returns (losses, prepared run, launch)."""
    from accelerate.utils import set_seed

    from dataforge.train.checkpoint import load_checkpoint, save_checkpoint
    from dataforge.train.data import batch_from_rows
    from dataforge.train.loop import make_accelerator, prepare_training, train_step
    from dataforge.train.model import build_model

    launch = make_accelerator(cfg)
    set_seed(cfg.seed)
    model, _ = build_model(cfg, launch.precision, STEPS, on_gpu=launch.on_gpu, bf16_ok=launch.bf16_ok,
                           device_index=launch.accelerator.local_process_index)
    run = prepare_training(cfg, launch.accelerator, model, STEPS, packed=True, on_gpu=launch.on_gpu)
    if resume_from is not None:
        assert load_checkpoint(launch.accelerator, resume_from, run.model)["step"] == start
    losses = []
    batch = batch_from_rows(rows[:BATCH], 0, None, packed=True)
    for step in range(start, stop):
        losses.append(train_step(run, launch.accelerator, [batch], cfg, step)[1])
        if save_at == step + 1:
            save_checkpoint(launch.accelerator, checkpoints, save_at, {"step": save_at}, keep_last=1)
    return losses, run, launch


def test_lora_trains_under_bf16_autocast_with_fp32_adapters(rows):
    losses, run, launch = _train(_config("lora"), rows)
    assert launch.on_gpu and launch.precision == "bf16"        # auto picks bf16 on a GPU that has it
    model = run.model
    base = [p for n, p in model.named_parameters() if not p.requires_grad and p.ndim == 2]
    adapters = [p for n, p in model.named_parameters() if "lora_" in n]
    assert base and all(p.dtype == torch.bfloat16 and p.is_cuda for p in base)
    assert adapters and all(p.dtype == torch.float32 and p.requires_grad for p in adapters)
    seen = []
    layer = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
    hook = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    batch = {k: torch.tensor([rows[0][k]], device="cuda") for k in ("input_ids", "position_ids")}
    model(**batch, use_cache=False)                             # the prepared forward runs under autocast
    hook.remove()
    assert seen == [torch.bfloat16]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert run.optimizer_name == "adamw"


def test_qlora_quantizes_to_nf4_with_double_quant_and_trains_with_paged_adamw(rows):
    import bitsandbytes as bnb

    losses, run, _ = _train(_config("qlora"), rows)
    layers = [m for m in run.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 4 * 7                                   # every linear layer of the 4 blocks
    for m in layers:
        state = m.weight.quant_state
        assert state.quant_type == "nf4" and state.nested              # double quantization
        assert m.compute_dtype == torch.bfloat16 and m.weight.is_cuda
        assert m.weight.dtype == torch.bfloat16                        # quant storage = compute dtype
    assert run.optimizer_name == "paged_adamw"
    assert isinstance(run.optimizer.optimizer, bnb.optim.PagedAdamW)
    states = [s for s in run.optimizer.optimizer.state.values() if "state1" in s]
    assert states and all(getattr(s["state1"], "is_paged", False) for s in states)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


@pytest.mark.parametrize("optimizer", ["paged_adamw", "paged_adamw_8bit"])
def test_paged_optimizers_step_the_adapters(rows, optimizer):
    losses, run, _ = _train(_config("lora", optimizer=optimizer), rows)
    assert run.optimizer_name == optimizer
    assert "Paged" in type(run.optimizer.optimizer).__name__
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_resuming_on_the_gpu_continues_the_loss_where_it_stopped(rows, tmp_path, method):
    cfg = _config(method)
    straight, _, _ = _train(cfg, rows, save_at=3, checkpoints=tmp_path)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    resumed, _, _ = _train(cfg, rows, start=3, resume_from=tmp_path / "checkpoint-00000003")
    assert len(resumed) == STEPS - 3
    for a, b in zip(straight[3:], resumed, strict=True):
        assert abs(a - b) < 1e-3, (straight, resumed)
