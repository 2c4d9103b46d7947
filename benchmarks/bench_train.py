"""Training throughput: `dataforge train` against TRL's SFTTrainer, in one process, on the same data.

Same tiny model, same tokenized demo build (prompt tokens masked), same LoRA (r 16, alpha 32, every
linear layer), same optimizer and schedule, same batch size and step count, fp32 on CPU with the
same thread count. Three batching set-ups are compared:

    random         padded batches in random order (dataforge `batching: random`, TRL default)
    length-grouped padded batches of similar length (dataforge default, TRL `group_by_length`)
    packed         dataforge: the build packs train records (best-fit decreasing); TRL: `packing=True`
                   (best-fit decreasing, padding-free)

Both sides count tokens the same way, from the batches the model actually received: all tokens
(non-pad), trained tokens (those with a label after the shift) and batch positions (padding
included). Times cover the training loop only (dataforge: the summed step times it reports; TRL:
`train_runtime`), not model loading or the final evaluation.

    python benchmarks/bench_train.py                      # ~10 minutes on 2 CPU cores
    python benchmarks/bench_train.py --steps 10 --max-length 256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def build(workdir: Path, max_length: int, pack: bool) -> Path:
    """The demo build (pipelines/build_alpaca.yaml), with this benchmark's length and packing."""
    from dataforge.config.base import read_yaml, validate_config
    from dataforge.config.build import BuildConfig
    from dataforge.data.pipeline import run_build
    from dataforge.paths import pipelines_dir

    raw = read_yaml(pipelines_dir() / "build_alpaca.yaml")
    raw["output"] = str(workdir / f"build-{max_length}-{'packed' if pack else 'plain'}")
    raw["tokenize"].update(max_length=max_length, pack=pack)
    raw["decontaminate"] = {"enabled": False}
    cfg = validate_config(BuildConfig, raw)
    return run_build(cfg, base_dir=pipelines_dir(), show_progress=False).run_dir


def run_dataforge(run_dir: Path, out: Path, args, batching: str) -> dict:
    from dataforge.config.base import validate_config
    from dataforge.train.config import TrainConfig
    from dataforge.train.loop import train

    cfg = validate_config(TrainConfig, {
        "model": "tiny", "method": "lora", "seed": args.seed, "output": str(out), "lora": LORA,
        "data": {"path": str(run_dir), "batching": batching},
        "train": {"learning_rate": 1e-3, "scheduler": "cosine", "max_steps": args.steps,
                  "batch_size": args.batch_size, "max_grad_norm": 1.0},
        "eval": {"at_start": False, "every_steps": None}, "checkpoint": {"every_steps": args.steps + 1},
    })
    t0 = time.perf_counter()
    stats = train(cfg, show_progress=False).manifest["stats"]
    return {"trained_tps": stats["trained_tokens_per_s"], "tps": stats["tokens_per_s"],
            "non_pad": 1 - stats["padding_fraction"], "wall": time.perf_counter() - t0}


class CountingCollator:
    """Wraps TRL's collator and counts what each batch holds, exactly as dataforge counts."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, examples):
        out = self.inner(examples)
        labels = out["labels"]
        self.batches.append((sum(len(e["input_ids"]) for e in examples), int((labels[:, 1:] != -100).sum()),
                             labels.numel()))
        return out


def run_trl(run_dir: Path, out: Path, args, strategy: str, packing: bool) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from dataforge.models import load_tokenizer, resolve_model
    from dataforge.train.model import linear_module_names

    torch.use_deterministic_algorithms(False)
    train_ds = datasets.load_from_disk(str(run_dir / "tokenized"))["train"].select_columns(["input_ids", "labels"])
    tokenizer = load_tokenizer("tiny")
    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"))
    model.config.use_cache = False  # with a KV cache, transformers would not isolate packed sequences
    config = SFTConfig(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=1e-3, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=args.seed, use_cpu=True, bf16=False,
        max_length=args.max_length, packing=packing, packing_strategy="bfd", train_sampling_strategy=strategy,
        report_to="none", save_strategy="no", eval_strategy="no", logging_steps=args.steps, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules=linear_module_names(model), task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_ds, processing_class=tokenizer,
                         peft_config=peft_config)
    collator = trainer.data_collator = CountingCollator(trainer.data_collator)  # TRL's own, counted
    t0 = time.perf_counter()
    runtime = trainer.train().metrics["train_runtime"]
    used = collator.batches[: args.steps]  # the dataloader may have fetched one batch ahead
    tokens, trained, positions = (sum(x) for x in zip(*used, strict=True))
    return {"trained_tps": trained / runtime, "tps": tokens / runtime, "non_pad": tokens / positions,
            "wall": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plain, packed = build(work, args.max_length, pack=False), build(work, args.max_length, pack=True)
        setups = [("random", plain, "random", "random", False),
                  ("length-grouped", plain, "length_grouped", "group_by_length", False),
                  ("packed", packed, "random", "random", True)]
        for name, run_dir, df_batching, trl_strategy, trl_packing in setups:
            trl = run_trl(plain, work / f"trl-{name}", args, trl_strategy, trl_packing)
            df = run_dataforge(run_dir, work / f"df-{name}", args, df_batching)
            rows.append((name, df, trl))
            print(f"done {name}", flush=True)

    import trl as trl_pkg

    print(f"\ntiny model, LoRA r={LORA['r']}, {args.steps} steps x batch {args.batch_size}, max_length "
          f"{args.max_length}, {args.threads} CPU threads, TRL {trl_pkg.__version__}")
    print(f"{'batching':<16}{'':>4}{'trained tok/s':>15}{'all tok/s':>12}{'non-pad':>10}{'wall s':>9}")
    for name, df, trl in rows:
        for who, r in (("dataforge", df), ("trl", trl)):
            print(f"{name if who == 'dataforge' else '':<16}{who:>10}{r['trained_tps']:>9,.0f}{r['tps']:>12,.0f}"
                  f"{r['non_pad']:>10.1%}{r['wall']:>9.1f}")
        print(f"{'':<16}{'ratio':>10}{df['trained_tps'] / trl['trained_tps']:>9.2f}x")
    padded = next(df for name, df, _ in rows if name == "random")
    packed_df = next(df for name, df, _ in rows if name == "packed")
    print(f"\nnon-pad tokens per batch: packed {packed_df['non_pad']:.1%} vs naive padding {padded['non_pad']:.1%}")


if __name__ == "__main__":
    main()
