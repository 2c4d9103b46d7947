"""The GPU check: dataforge's own training step, MC scoring and generation, timed on real model shapes.

No hub is needed: each model is randomly initialised from a config with a real model's shapes,
written to a temporary folder with the tiny tokenizer, and loaded back through dataforge's loaders.
Token ids are drawn from the tiny tokenizer's range, which is all that speed depends on.

    qwen-0.5b   Qwen2.5-0.5B shapes: hidden 896, 24 layers, 14 heads, 2 kv heads, MLP 4864,
                vocab 151936, tied embeddings (494M parameters)
    llama-1b    Llama-3.2-1B shapes: hidden 2048, 16 layers, 32 heads, 8 kv heads, MLP 8192,
                vocab 128256, tied embeddings (1.24B parameters)

For each model, three methods go through `dataforge.train`: `build_model` (LoRA r 16 on every linear
layer; QLoRA: NF4 base with double quantization, bf16 compute, paged AdamW; full: fp32 master
weights), `prepare_training` and `train_step` (the loop `dataforge train` runs), on packed rows made
by the build's `pack_best_fit` from records of 64-1024 tokens with the prompt third masked, batched
by `batch_from_rows`. Reported per method: tokens/s (all tokens the model saw), trained tokens/s
(tokens with a loss), MFU, peak GPU memory (torch's max allocated, reset before each method) and the
memory the prepared model holds before its first step (at 8 x 2,048 tokens, activations and logits
dominate the peak, so QLoRA's 4-bit saving shows most in the latter). Times cover `train_step` (forward,
backward, clipping, optimizer step) with `deterministic: false`; collating the batch is left out.

MFU = FLOPs per token x tokens/s / peak (989 TFLOP/s dense bf16 on an H100/H200 SXM; `--peak-tflops`
elsewhere). FLOPs per token count the matmuls over N weights (every parameter outside the embedding
lookup and the norms; a tied embedding counts once, as the output head): full fine-tuning 6N (forward
2N, activation gradients 2N, weight gradients 2N); LoRA and QLoRA 4N + 6A (no weight gradients for the
N frozen weights; A adapter weights get all three; QLoRA's dequantization is not counted). Attention
scores (which grow with the sequence) are left out of every figure, so MFU is understated a little.

Then, on each model in bf16: loglikelihood scoring through the MC eval path (`HFLanguageModel`,
4 choices of 4-16 tokens per context of 128-512 tokens, as ARC or HellaSwag), in requests and scored
tokens per second, and greedy `generate` through the transformers backend, in new tokens per second.

    python benchmarks/bench_gpu.py                       # on the GPU host, ~3 minutes on an H200
    python benchmarks/bench_gpu.py --smoke               # same code on CPU at toy shapes, < 1 minute

`--smoke` uses a 2-layer model in fp32 (train.precision auto: bf16 on a GPU that has it, fp32 on CPU)
and fp32 QLoRA compute, with AdamW in place of paged AdamW (CUDA only).
It prints one table and writes JSON (`--json`, default runs/gpu/bench_gpu.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    "qwen-0.5b": {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                  "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
                  "tie_word_embeddings": True, "max_position_embeddings": 32768, "rope_theta": 1e6,
                  "rms_norm_eps": 1e-6},
    "llama-1b": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256,
                 "tie_word_embeddings": True, "max_position_embeddings": 131072, "rope_theta": 5e5,
                 "rms_norm_eps": 1e-5, "head_dim": 64},
}
SMOKE_SHAPE = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 4096,
               "tie_word_embeddings": True, "max_position_embeddings": 2048}
METHODS = ("lora", "qlora", "full")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}     # dense bf16, SXM
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
TOKEN_LOW = 3                                    # ids below are the tiny tokenizer's special tokens


def save_random_model(shape: dict, folder: Path, dtype: str = "bfloat16") -> Path:
    """A randomly initialised causal LM of `shape` with the tiny tokenizer, loadable by name as a folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from dataforge.paths import TINY_MODEL_DIR

    fields = dict(shape)
    config = AutoConfig.for_model(fields.pop("model_type"), bos_token_id=1, eos_token_id=2, pad_token_id=0,
                                  **fields)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (TINY_MODEL_DIR / name).is_file():
            shutil.copy(TINY_MODEL_DIR / name, folder / name)
    del model
    return folder


def packed_rows(n_records: int, seq_len: int, seed: int, record_range: tuple[int, int]) -> list[dict]:
    """Rows of the build's packing (`pack_best_fit`) over synthetic records: ids from the tiny
    tokenizer's range, the first third of each record a masked prompt."""
    import numpy as np

    from dataforge.data.pack import pack_best_fit
    from dataforge.data.rows import IGNORE_INDEX

    rng = np.random.default_rng(seed)
    lo, hi = record_range
    ids, labels = [], []
    for length in rng.integers(lo, min(hi, seq_len) + 1, size=n_records):
        tokens = rng.integers(TOKEN_LOW, 4096, size=int(length)).tolist()
        prompt = int(length) // 3
        ids.append(tokens)
        labels.append([IGNORE_INDEX] * prompt + tokens[prompt:])
    table = pack_best_fit({"input_ids": ids, "labels": labels}, seq_len).table
    return table.select(["input_ids", "labels", "position_ids"]).to_pylist()


def matmul_params(model) -> int:
    """Weights on the per-token matmul path: every parameter except norms and the embedding lookup
    (a tied embedding is counted once, as the output head). Counts 4-bit weights at full size."""
    import torch

    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(m.in_features * m.out_features for name, m in base.named_modules()
               if isinstance(m, linear_types) and "lora_" not in name)


def adapter_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)


def flops_per_token(method: str, n_matmul: int, n_adapter: int) -> tuple[int, str]:
    if method == "full":
        return 6 * n_matmul, "6N"
    return 4 * n_matmul + 6 * n_adapter, "4N + 6A"


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _free_memory() -> None:
    """Release the previous model's GPU memory, so each method's peak is its own."""
    import torch

    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def train_method(model_dir: Path, name: str, method: str, rows: list[dict], args) -> dict:
    """Warm-up steps, then timed steps of `dataforge.train`'s own step on packed rows."""
    import torch

    from dataforge.train.config import TrainConfig
    from dataforge.train.data import batch_from_rows
    from dataforge.train.loop import make_accelerator, prepare_training, train_step
    from dataforge.train.model import build_model

    _free_memory()
    steps = args.warmup + args.steps
    cfg = TrainConfig(model=str(model_dir), method=method, lora=LORA, data={"path": "synthetic"},
                      train={"learning_rate": 1e-4, "max_steps": steps, "batch_size": args.batch_size,
                             "precision": "auto", "warmup_steps": 1},
                      deterministic=False, seed=0)
    launch = make_accelerator(cfg)
    accelerator = launch.accelerator
    model, info = build_model(cfg, launch.precision, steps, on_gpu=launch.on_gpu, bf16_ok=launch.bf16_ok,
                              device_index=accelerator.local_process_index)
    quantized = sum(type(m).__module__.startswith("bitsandbytes") and type(m).__name__ == "Linear4bit"
                    for m in model.modules())
    n_matmul, n_adapter = matmul_params(model), adapter_params(model)
    run = prepare_training(cfg, accelerator, model, steps, packed=True, on_gpu=launch.on_gpu)
    resident = torch.cuda.memory_allocated() if launch.on_gpu else None    # weights, before any activation
    sync = torch.cuda.synchronize if launch.on_gpu else (lambda: None)
    losses, tokens, trained, seconds = [], 0.0, 0.0, 0.0
    for step in range(steps):
        start = step * args.batch_size % len(rows)
        chunk = (rows + rows)[start:start + args.batch_size]
        batch = batch_from_rows(chunk, 0, None, packed=True)
        sync()
        t0 = time.perf_counter()
        counts, loss, _ = train_step(run, accelerator, [batch], cfg, step)
        sync()
        losses.append(loss)
        if step >= args.warmup:
            seconds += time.perf_counter() - t0
            tokens += counts[0].item()
            trained += counts[1].item()
    from dataforge.train.outputs import peak_memory_bytes

    fpt, rule = flops_per_token(method, n_matmul, n_adapter)
    tps = tokens / seconds
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    precision = {"no": "fp32"}.get(launch.precision, launch.precision)
    row = {"model": name, "method": method, "precision": precision, "optimizer": run.optimizer_name,
           "qlora_compute_dtype": str(model.dtype).replace("torch.", "") if method == "qlora" else None,
           "quantized_layers": quantized, "seq_len": args.seq_len, "batch_size": args.batch_size,
           "steps_timed": args.steps, "params_total": info.total_params, "params_trainable": info.trainable_params,
           "matmul_params": n_matmul, "adapter_params": n_adapter, "flops_per_token": fpt, "flops_rule": rule,
           "tokens_per_s": round(tps, 1), "trained_tokens_per_s": round(trained / seconds, 1),
           "mfu": round(fpt * tps / peak, 4) if peak else None,
           "peak_memory_bytes": peak_memory_bytes(accelerator.device.type), "model_memory_bytes": resident,
           "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}
    del run, model, accelerator, launch
    _reset_accelerate()
    _free_memory()
    return row


def score_and_generate(model_dir: Path, name: str, args) -> tuple[dict, dict]:
    """MC loglikelihood scoring through `HFLanguageModel` and greedy generation through the
    transformers backend, both on the model in bf16 (fp32 in smoke mode)."""
    import numpy as np
    import torch

    from dataforge.eval.lm import HFLanguageModel
    from dataforge.generate.base import SamplingParams
    from dataforge.generate.hf_backend import TransformersBackend
    from dataforge.models import load_causal_lm, load_tokenizer

    _free_memory()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "float32" if args.smoke else "bfloat16"
    rng = np.random.default_rng(1)
    lo, hi = args.context_range
    pairs = []
    for _ in range(args.questions):
        ctx = rng.integers(TOKEN_LOW, 4096, size=int(rng.integers(lo, hi + 1))).tolist()
        pairs += [(ctx, rng.integers(TOKEN_LOW, 4096, size=int(rng.integers(4, 17))).tolist()) for _ in range(4)]
    model = load_causal_lm(str(model_dir), dtype=getattr(torch, dtype), device=device)
    lm = HFLanguageModel(model, load_tokenizer(str(model_dir)), name=name, fingerprint=name,
                         batch_size=args.score_batch)
    lm.loglikelihood_tokens(pairs[:8])                          # warm-up
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    lls = lm.loglikelihood_tokens(pairs)
    sync()
    seconds = time.perf_counter() - t0
    scored = sum(len(c) + len(x) for c, x in pairs)
    score = {"model": name, "requests": len(pairs), "requests_per_s": round(len(pairs) / seconds, 1),
             "tokens_per_s": round(scored / seconds, 1), "mean_ll_per_token": round(
                 sum(lls) / sum(len(x) for _, x in pairs), 4)}
    del lm, model
    _free_memory()

    backend = TransformersBackend(str(model_dir), dtype=dtype, batch_size=args.gen_batch)
    tokenizer = backend.tokenizer
    prompts = [tokenizer.decode(rng.integers(TOKEN_LOW, 4096, size=64).tolist()) for _ in range(args.gen_batch)]
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0)
    backend.generate(prompts[:2], SamplingParams(max_tokens=4))  # warm-up
    sync()
    t0 = time.perf_counter()
    gens = [g[0] for g in backend.generate(prompts, params)]
    sync()
    seconds = time.perf_counter() - t0
    new = sum(g.completion_tokens for g in gens)
    generate = {"model": name, "prompts": len(prompts), "new_tokens": new, "tokens_per_s": round(new / seconds, 1)}
    backend.close()
    del backend
    _free_memory()
    return score, generate


def device_record(args) -> dict:
    import torch
    import transformers

    record = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        record["device"] = torch.cuda.get_device_name(0)
        record["cuda"] = torch.version.cuda
    else:
        record["device"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    try:
        import bitsandbytes

        record["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        record["bitsandbytes"] = None
    return record


def targets(train_rows: list[dict], on_gpu: bool) -> dict:
    """The issue's two targets, where the figures exist: LoRA bf16 MFU >= 40 % on the 1B-shaped model,
    and QLoRA's peak memory at most a third of LoRA bf16's on the same model."""
    by = {(r["model"], r["method"]): r for r in train_rows}
    out = {}
    lora, qlora = by.get(("llama-1b", "lora")), by.get(("llama-1b", "qlora"))
    if lora and lora["mfu"] is not None:
        out["lora_bf16_mfu_1b_at_least_0.40"] = lora["mfu"] >= 0.40
    if lora and qlora and on_gpu:
        out["qlora_peak_memory_at_most_third_of_lora"] = qlora["peak_memory_bytes"] * 3 <= lora["peak_memory_bytes"]
    return out


def print_table(result: dict) -> None:
    print(f"\n{result['device']['device']}  torch {result['device']['torch']}  "
          f"transformers {result['device']['transformers']}  {'(smoke: toy shapes on CPU)' if result['smoke'] else ''}")
    head = f"{'model':<10} {'method':<6} {'prec':<5} {'optimizer':<12} {'tok/s':>10} {'trained/s':>10} " \
           f"{'MFU':>6} {'peak GiB':>9} {'model GiB':>9} {'FLOPs/tok':>9} {'loss':>14}"
    print(head)
    print("-" * len(head))
    for r in result["train"]:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        resident = f"{r['model_memory_bytes'] / 2**30:.2f}" if r["model_memory_bytes"] is not None else "-"
        print(f"{r['model']:<10} {r['method']:<6} {r['precision']:<5} {r['optimizer']:<12} {r['tokens_per_s']:>10,.0f} "
              f"{r['trained_tokens_per_s']:>10,.0f} {mfu:>6} {r['peak_memory_bytes'] / 2**30:>9.2f} {resident:>9} "
              f"{r['flops_rule']:>9} {r['loss_first']:>6.3f}->{r['loss_last']:<6.3f}")
    for s, g in zip(result["score"], result["generate"], strict=True):
        print(f"{s['model']:<10} MC scoring {s['requests_per_s']:,.0f} requests/s ({s['tokens_per_s']:,.0f} tok/s); "
              f"generate {g['tokens_per_s']:,.0f} new tok/s (batch {g['prompts']})")
    for name, ok in result["targets"].items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="toy shapes on CPU, under a minute")
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--questions", type=int, default=256, help="MC questions (4 choices each) to score")
    parser.add_argument("--peak-tflops", type=float, default=None, help="default: 989 on H100/H200, else no MFU")
    parser.add_argument("--json", type=Path, default=Path("runs/gpu/bench_gpu.json"))
    args = parser.parse_args(argv)

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.smoke:
        args.steps, args.warmup, args.batch_size, args.seq_len, args.questions = 2, 1, 2, 128, 8
        shapes = {"toy": SMOKE_SHAPE}
        record_range, args.context_range, args.score_batch, args.gen_batch, args.new_tokens = (16, 96), (24, 48), 8, 2, 8
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device; run with --smoke on CPU")
        shapes = {k: SHAPES[k] for k in args.models}
        record_range, args.context_range, args.score_batch, args.gen_batch, args.new_tokens = (64, 1024), (128, 512), 32, 32, 128
        if args.peak_tflops is None:
            name = torch.cuda.get_device_name(0)
            args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)

    n_rows = args.batch_size * (args.warmup + args.steps)
    rows = packed_rows(n_rows * 4 * args.seq_len // sum(record_range) + 8, args.seq_len, 0, record_range)
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "smoke": args.smoke,
              "device": device_record(args), "peak_tflops": args.peak_tflops, "packed_rows": len(rows),
              "pack_fill": round(sum(len(r["input_ids"]) for r in rows) / (len(rows) * args.seq_len), 4),
              "train": [], "score": [], "generate": []}
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        for name, shape in shapes.items():
            model_dir = save_random_model(shape, Path(tmp) / name)
            for method in args.methods:
                result["train"].append(train_method(model_dir, name, method, rows, args))
            score, gen = score_and_generate(model_dir, name, args)
            result["score"].append(score)
            result["generate"].append(gen)
            shutil.rmtree(model_dir)
    result["targets"] = targets(result["train"], on_gpu=not args.smoke)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(result)
    print(f"\nwrote {args.json}")
    if not all(math.isfinite(r["loss_last"]) for r in result["train"]):
        raise SystemExit("a training loss is not finite")
    return result


if __name__ == "__main__":
    main()
