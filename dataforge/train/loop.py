"""`dataforge train`: the training recipe, top to bottom.

One loop serves every method and every launch: a single CPU process, one GPU, or many processes
under `accelerate launch` (DDP, FSDP or DeepSpeed, chosen by the accelerate config). The loop is
plain PyTorch on an `accelerate.Accelerator`, so resuming is exact: the data order is a function of
the step (`batching`), and a checkpoint restores weights, optimizer, scheduler and RNG states.

    data    -> build run folder (a pipeline YAML is built first), checked against the tokenizer
    model   -> base model (4-bit for qlora) + the method's trainable part
    loop    -> per step: grad_accum micro-batches, loss averaged over the step's trained tokens,
               clip, optimizer and scheduler step; eval per source, checkpoints, log rows
    outputs -> adapter/ (or the full model), train_log.jsonl, loss_curve.png, manifest.json
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from dataforge.errors import DataforgeError, StateError
from dataforge.track.base import Tracking, open_tracking
from dataforge.track.config import TrackingConfig
from dataforge.track.report import finish_train, train_row
from dataforge.train.checkpoint import (
    checkpoint_dirs,
    load_checkpoint,
    only_trainable_weights,
    save_checkpoint,
)
from dataforge.train.config import TrainConfig
from dataforge.train.outputs import (
    CURVE_FILE,
    LOG_FILE,
    MANIFEST_FILE,
    TrainLog,
    peak_memory_bytes,
    plot_loss_curve,
)

# Sections that may change between a run and its resumption: they do not alter the trajectory.
RESUMABLE_CHANGES = ("checkpoint", "eval", "log_every", "output", "report_to", "tracking")


class TrainingDiverged(DataforgeError):
    """The loss became NaN or infinite; the run stops before the bad update is applied."""


@dataclass
class TrainResult:
    output: Path
    manifest: dict


def _config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    paths = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            paths += _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            paths.append(f"{prefix}{key}")
    return paths


def _check_output(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to mix runs in one folder; return the checkpoint to resume from, if any. Read-only, so
    every process runs it and a refusal stops them all alike."""
    ckpts = checkpoint_dirs(out / "checkpoints")
    finished = _finished(out)
    if overwrite:
        return None
    if resume:
        if finished:
            raise StateError(f"{out} holds a finished run; nothing to resume")
        return ckpts[-1] if ckpts else None
    if finished or ckpts or (out / LOG_FILE).is_file():
        what = "a finished run" if finished else "an unfinished run"
        raise StateError(f"{out} holds {what}; pass --resume to continue it, --overwrite to start over, "
                         "or choose another output")
    return None


def _finished(out: Path) -> bool:
    import json

    path = out / MANIFEST_FILE
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("complete") is True


def _clear_output(out: Path) -> None:
    """--overwrite: remove what a previous run wrote, and nothing else."""
    for name in ("checkpoints", "adapter"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (LOG_FILE, CURVE_FILE, MANIFEST_FILE):
        (out / name).unlink(missing_ok=True)


def _enable_determinism() -> None:
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


@dataclass
class Launch:
    """The accelerator of this launch and the hardware choices made once for the whole run."""

    accelerator: Any
    precision: str          # accelerate mixed_precision: "no", "bf16" or "fp16"
    on_gpu: bool
    bf16_ok: bool


def make_accelerator(cfg: TrainConfig) -> Launch:
    """One process's accelerator: a single CPU or GPU, or one rank of an `accelerate launch` (DDP, FSDP,
    DeepSpeed, chosen by the accelerate config); `train` and the benchmarks start the same way."""
    import torch
    from accelerate import Accelerator, PartialState
    from accelerate.utils import parse_flag_from_env

    from dataforge.train.model import resolve_precision

    if cfg.deterministic:
        _enable_determinism()
    # Without a GPU, accelerate only sets up several processes (gloo) when told it runs on CPU.
    cpu = not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")
    state = PartialState(cpu=cpu)
    on_gpu = state.device.type == "cuda"
    bf16_ok = on_gpu and torch.cuda.is_bf16_supported()
    precision = resolve_precision(cfg.train.precision, on_gpu, bf16_ok)
    # accelerate divides each micro-batch loss by grad_accum (DeepSpeed does the same inside its engine
    # and steps only at the accumulation boundary); the loop multiplies it back, so the loss stays
    # normalized by the step's trained tokens under every backend.
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision, step_scheduler_with_optimizer=False,
                              gradient_accumulation_steps=cfg.train.grad_accum)
    return Launch(accelerator, precision, on_gpu, bf16_ok)


@dataclass
class Prepared:
    """The model under training with its optimizer, schedule and method hooks, ready for `train_step`."""

    model: Any
    optimizer: Any
    optimizer_name: str
    scheduler: Any
    warmup: int
    hooks: Any
    params: list


def prepare_training(cfg: TrainConfig, accelerator, model, total_steps: int, *, packed: bool,
                     on_gpu: bool) -> Prepared:
    """Optimizer and schedule for a built model, both handed to accelerate, and the checkpoint hooks."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from dataforge.train.methods import method_hooks
    from dataforge.train.model import make_optimizer

    hooks = method_hooks(cfg.method, model, packed)
    optimizer, optimizer_name = make_optimizer(cfg, model, on_gpu)
    warmup = cfg.train.warmup_steps or math.ceil(cfg.train.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.train.scheduler.value, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler, *hooks.checkpoint_objects())
    accelerator.register_save_state_pre_hook(only_trainable_weights)
    set_seed(cfg.seed, device_specific=True)  # dropout differs between processes
    params = [p for p in model.parameters() if p.requires_grad]
    return Prepared(model, optimizer, optimizer_name, scheduler, warmup, hooks, params)


def train_step(run: Prepared, accelerator, batches: list, cfg: TrainConfig, step: int,
               checkpoints: Path | None = None):
    """One optimizer step over `batches` (this process's micro-batches): the loss is the sum of token
    NLLs over the trained tokens of the whole step on all processes; clip, step, schedule.

    Returns (counts, loss, grad_norm): counts holds the step's tokens, trained tokens and batch
    positions summed over all processes. A non-finite loss raises before the update is applied.
    """
    import torch

    from dataforge.train.loss import batch_nll

    model, world = run.model, accelerator.num_processes
    counts = torch.tensor([sum(b.tokens for b in batches), sum(b.trained_tokens for b in batches),
                           sum(b.positions for b in batches)], dtype=torch.float64, device=accelerator.device)
    counts = accelerator.reduce(counts, reduction="sum")
    trained_global = max(counts[1].item(), 1.0)
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for i, batch in enumerate(batches):
        sync = i == len(batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            nll = batch_nll(model, batch, accelerator.device).sum()
            loss = nll * world / trained_global + run.hooks.extra_loss() / len(batches)
            accelerator.backward(loss * cfg.train.grad_accum)
        loss_sum += nll.detach().double()
    loss_sum = accelerator.reduce(loss_sum, reduction="sum")
    step_loss = loss_sum.item() / trained_global
    grad_norm = apply_update(run, accelerator, cfg, step, step_loss, checkpoints)
    return counts.cpu(), step_loss, grad_norm


def apply_update(run: Prepared, accelerator, cfg: TrainConfig, step: int, step_loss: float,
                 checkpoints: Path | None = None) -> float | None:
    """After backward: refuse a non-finite loss, clip, step the optimizer and the schedule; the grad norm."""
    if not math.isfinite(step_loss):
        raise TrainingDiverged(
            f"the training loss is {step_loss} at step {step + 1}; the update was not applied. Lower "
            f"train.learning_rate, keep train.max_grad_norm set, or check the data and base weights"
            + (f"; the last good checkpoint is in {checkpoints}" if checkpoints and checkpoint_dirs(checkpoints) else ""))
    grad_norm = None
    if cfg.train.max_grad_norm is not None:  # under DeepSpeed, its config clips and this returns None
        norm = accelerator.clip_grad_norm_(run.params, cfg.train.max_grad_norm)
        grad_norm = float(norm) if norm is not None else None
    run.optimizer.step()
    run.scheduler.step()
    run.hooks.after_step(step)
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> TrainResult:
    """Run (or resume) the training described by `cfg`; returns the output folder and its manifest."""
    import torch
    from accelerate.utils import set_seed

    from dataforge.models import load_tokenizer
    from dataforge.train.batching import MicroBatchPlan
    from dataforge.train.data import (
        check_vocabulary,
        load_build_run,
        make_batch,
        resolve_build,
        sequence_lengths,
    )
    from dataforge.train.loss import eval_loss_by_source
    from dataforge.train.model import build_model
    from dataforge.train.save import (
        base_model_record,
        save_trained_model,
        training_chat_template,
        write_manifest,
        write_weights,
    )

    launch = make_accelerator(cfg)
    accelerator, precision, on_gpu = launch.accelerator, launch.precision, launch.on_gpu
    main = accelerator.is_main_process
    console = Console(stderr=True, quiet=not (main and show_progress))
    out = Path(cfg.output)

    # -- data ---------------------------------------------------------------------------------
    resume_from = _check_output(out, resume, overwrite)
    accelerator.wait_for_everyone()
    if overwrite and main:
        _clear_output(out)
    with accelerator.main_process_first():
        run_dir = resolve_build(cfg.data, show_progress=show_progress and main)
    objective = None
    if cfg.objective.value == "sft":
        data = load_build_run(run_dir)
    else:
        from dataforge.train.pref_data import load_preference_run
        from dataforge.train.pref_objective import make_objective

        data = load_preference_run(run_dir, cfg.objective.value)
        objective = make_objective(cfg)
    tokenizer = load_tokenizer(cfg.model)
    tokenizer.chat_template = training_chat_template(data, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    world, rank = accelerator.num_processes, accelerator.process_index
    lengths = sequence_lengths(data.train) if objective is None else objective.lengths(data.train)
    plan = MicroBatchPlan(lengths, cfg.train.batch_size, world, cfg.train.grad_accum,
                          cfg.seed, cfg.data.batching == "length_grouped" and not data.packed,
                          cfg.train.epochs, cfg.train.max_steps)

    # -- model, optimizer, schedule -------------------------------------------------------------
    set_seed(cfg.seed)  # identical initialization on every process
    model, info = build_model(cfg, precision, plan.total_steps, on_gpu=on_gpu, bf16_ok=launch.bf16_ok,
                              device_index=accelerator.local_process_index)
    if objective is None:
        check_vocabulary(data, cfg.model, tokenizer, model.get_input_embeddings().weight.shape[0])
    run = prepare_training(cfg, accelerator, model, plan.total_steps, packed=data.packed, on_gpu=on_gpu)
    model, optimizer_name, scheduler, warmup = run.model, run.optimizer_name, run.scheduler, run.warmup

    config_json = cfg.model_dump(mode="json")
    start_step = 0
    if resume_from is not None:
        saved = load_checkpoint(accelerator, resume_from, model)
        diffs = [d for d in _config_differences(saved["config"], config_json) if not d.startswith(RESUMABLE_CHANGES)]
        if diffs or saved["data_fingerprint"] != data.fingerprint or saved["world_size"] != world:
            why = (f"config fields differ: {', '.join(diffs)}" if diffs else
                   "the training data changed" if saved["data_fingerprint"] != data.fingerprint else
                   f"it ran on {saved['world_size']} processes, this on {world}")
            raise StateError(f"cannot resume from {resume_from}: {why}")
        start_step = saved["step"]
        console.print(f"resuming from {resume_from} (step {start_step} of {plan.total_steps})")
    elif resume:
        console.print(f"no checkpoint in {out / 'checkpoints'}; starting from step 0")
    out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    tracking = open_tracking(TrackingConfig.of(cfg.report_to, cfg.tracking), "train", out, config_json,
                             resume_step=start_step if resume_from is not None else None) if main else Tracking([])
    log = TrainLog(out / LOG_FILE, start_step if resume_from is not None else None, enabled=main,
                   on_add=lambda row: tracking.log(*train_row(row)))

    meta = {"base_model": base_model_record(cfg, accelerator.unwrap_model(model).config), "data": data,
            "info": info, "optimizer": optimizer_name, "world_size": world, "device": str(accelerator.device),
            "distributed": {"type": str(accelerator.distributed_type.value), "backend": accelerator.state.backend},
            "total_steps": plan.total_steps, "warmup_steps": warmup}
    if main:
        write_manifest(out, cfg, meta, stats=None, complete=False)

    last_eval: tuple[int, dict] = (-1, {})

    def evaluate(step: int) -> None:
        nonlocal last_eval
        if objective is None:
            metrics = eval_loss_by_source(model, data, accelerator, cfg.eval.batch_size, pad_id)
        else:
            from dataforge.train.pref_objective import preference_eval

            metrics = preference_eval(model, data, accelerator, cfg.eval.batch_size, pad_id, objective)
        if metrics:
            log.add({"step": step, **{k: round(v, 6) for k, v in metrics.items()}})
        last_eval = (step, metrics)

    # -- loop -------------------------------------------------------------------------------------
    if start_step == 0 and cfg.eval.at_start:
        evaluate(0)
    totals = torch.zeros(4, dtype=torch.float64)  # tokens, trained tokens, batch positions, seconds
    pairs_done = 0.0  # preference objectives: pairs (or kto completions) trained on
    progress = _progress(console, plan.total_steps, start_step)
    with progress:
        task = progress.add_task("train", total=plan.total_steps, completed=start_step, loss=float("nan"), tps=0.0)
        for step in range(start_step, plan.total_steps):
            t0 = time.perf_counter()
            step_metrics: dict = {}
            if objective is None:
                batches = [make_batch(data.train, plan.records(m, rank), pad_id, data.pad_to_multiple_of, data.packed)
                           for m in plan.step_micro_batches(step)]
                counts, step_loss, grad_norm = train_step(run, accelerator, batches, cfg, step, out / "checkpoints")
            else:
                from dataforge.train.pref_objective import preference_step

                batches = [objective.make_batch(data.train, plan.records(m, rank), pad_id, data.pad_to_multiple_of)
                           for m in plan.step_micro_batches(step)]
                counts, step_loss, grad_norm, step_metrics = preference_step(
                    run, accelerator, batches, cfg, step, objective, out / "checkpoints")
                pairs_done += counts[3].item()
                counts = counts[:3]
            seconds = time.perf_counter() - t0
            totals += torch.cat([counts, torch.tensor([seconds], dtype=torch.float64)])
            done = step + 1
            progress.update(task, completed=done, loss=step_loss, tps=counts[1].item() / seconds)

            if done % cfg.log_every == 0 or done == plan.total_steps:
                log.add({"step": done, "epoch": round(plan.epoch_of(done * cfg.train.grad_accum), 4),
                         "loss": round(step_loss, 6), "lr": scheduler.get_last_lr()[0],
                         **({"grad_norm": round(grad_norm, 6)} if grad_norm is not None else {}),
                         "tokens": int(counts[0]), "trained_tokens": int(counts[1]),
                         "tokens_per_s": round(counts[0].item() / seconds, 1),
                         "trained_tokens_per_s": round(counts[1].item() / seconds, 1),
                         **{k: round(v, 6) for k, v in step_metrics.items()}})
            if cfg.eval.every_steps and done % cfg.eval.every_steps == 0:
                evaluate(done)
            if done % cfg.checkpoint.every_steps == 0 and done < plan.total_steps:
                save_checkpoint(accelerator, out / "checkpoints", done,
                                {"step": done, "config": config_json, "data_fingerprint": data.fingerprint,
                                 "world_size": world}, cfg.checkpoint.keep_last,
                                weights=None if cfg.method == "full" else      # a full copy per checkpoint is too big
                                lambda path: write_weights(accelerator, model, tokenizer, data.template, path))

    # -- outputs ----------------------------------------------------------------------------------
    if last_eval[0] != plan.total_steps:
        evaluate(plan.total_steps)
    save_trained_model(accelerator, model, tokenizer, data, cfg, out / "adapter")
    tokens, trained, positions, seconds = totals.tolist()
    stats = {
        "steps_run": plan.total_steps - start_step,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "trained_tokens_per_s": round(trained / seconds, 1) if seconds else None,
        "padding_fraction": round(1 - tokens / positions, 6) if positions else None,
        **({"trained_pairs_per_s": round(pairs_done / seconds, 2) if seconds else None} if objective else {}),
        "peak_memory_bytes": peak_memory_bytes(accelerator.device.type),
        "final_loss": log.last("loss") if start_step < plan.total_steps else None,
        **{f"final_{k}": v for k, v in last_eval[1].items()},
    }
    manifest = None
    if main:
        plot_loss_curve(log.rows, out / CURVE_FILE, f"{cfg.method} on {cfg.model}")
        manifest = write_manifest(out, cfg, meta, stats=stats, complete=True)
        finish_train(tracking, out, stats, [out / MANIFEST_FILE, out / CURVE_FILE])
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(output=out, manifest=manifest or {"stats": stats, "model_info": asdict(info)})


def _progress(console: Console, total: int, start: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} trained tok/s"),
                    TimeRemainingColumn(), console=console, transient=True, disable=console.quiet)
