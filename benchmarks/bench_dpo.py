"""DPO throughput: `dataforge train --objective dpo` against TRL's DPOTrainer, in one process, same data.

Same tiny model, same pairs (the bundled demo pairs, rendered with the tiny tokenizer's chat template
and tokenized once; TRL's train set is replaced by the same token ids), same LoRA (r 16, alpha 32,
dropout 0, every linear layer), beta 0.1 sigmoid loss, AdamW with the same learning rate, cosine
schedule and clipping, same batch size and step count, fp32 on CPU with the same thread count. Both
take the reference from the base with the adapter off (TRL: a fresh peft_config, no ref model).

Trained pairs/s: pairs seen / time of the training loop only (dataforge: the summed step times it
reports; TRL: `train_runtime`), not loading or the final eval.

    python benchmarks/bench_dpo.py                       # 20 steps x 8 pairs, max_length 192
    python benchmarks/bench_dpo.py --steps 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LORA = {"r": 16, "alpha": 32, "dropout": 0.0}
BETA = 0.1


def pair_rows(max_length: int) -> list[dict]:
    from dataforge.models import load_tokenizer
    from dataforge.paths import DEMO_DATA_DIR
    from dataforge.train.reward_score import encode_completion

    tok = load_tokenizer("tiny")
    rows = []
    for line in (DEMO_DATA_DIR / "preference" / "pairs.jsonl").read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        prompt = encode_completion(tok, p["instruction"], p["input"], "", 10**6)[:-1]  # drop the empty answer's eos
        c = encode_completion(tok, p["instruction"], p["input"], p["chosen"], max_length)
        r = encode_completion(tok, p["instruction"], p["input"], p["rejected"], max_length)
        n = len(prompt)
        if n >= max_length - 8:  # no room left for the answers
            continue
        assert c[:n] == prompt and r[:n] == prompt
        rows.append({"id": p["id"], "prompt_id": p["id"], "source": "domain", "prompt_ids": prompt,
                     "chosen_ids": c[n:], "rejected_ids": r[n:],
                     "chosen_input_ids": c, "chosen_labels": [-100] * n + c[n:],
                     "rejected_input_ids": r, "rejected_labels": [-100] * n + r[n:]})
    return rows


def write_run(root: Path, rows: list[dict], max_length: int) -> Path:
    import datasets

    keep = ("id", "prompt_id", "source", "chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
    data = datasets.Dataset.from_list([{k: r[k] for k in keep} for r in rows])
    datasets.DatasetDict({"train": data}).save_to_disk(str(root / "tokenized"))
    (root / "manifest.json").write_text(json.dumps({
        "kind": "build", "task": "preference", "complete": True, "fingerprint": f"bench-dpo-{len(rows)}-{max_length}",
        "sources": {"domain": {"by_split": {"train": len(rows)}}},
        "tokenize": {"tokenizer": "tiny", "max_length": max_length}}))
    return root


def _fresh_accelerate_state() -> None:
    """TRL's Trainer and dataforge's loop each set up accelerate for their own run, in one process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def run_dataforge(run: Path, out: Path, args, batching: str) -> float:
    from dataforge.train.config import TrainConfig
    from dataforge.train.loop import train

    _fresh_accelerate_state()

    cfg = TrainConfig(model="tiny", objective="dpo", seed=7, output=str(out), lora=LORA, data={"path": str(run),
                      "batching": batching}, preference={"beta": BETA},
                      train={"learning_rate": 1e-3, "max_steps": args.steps, "batch_size": args.batch_size,
                             "warmup_steps": 0, "scheduler": "cosine", "max_grad_norm": 1.0},
                      eval={"at_start": False}, checkpoint={"every_steps": 10**6})
    return train(cfg, overwrite=True, show_progress=False).manifest["stats"]["trained_pairs_per_s"]


def run_trl(rows: list[dict], out: Path, args) -> float:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from dataforge.models import load_tokenizer, resolve_model
    from dataforge.train.model import linear_module_names

    tok = load_tokenizer("tiny")
    _fresh_accelerate_state()
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny"), dtype=torch.float32)
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                             target_modules=linear_module_names(model), task_type="CAUSAL_LM")
    text = datasets.Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 2)
    cfg = DPOConfig(output_dir=str(out), beta=BETA, loss_type=["sigmoid"], learning_rate=1e-3, max_steps=args.steps,
                    per_device_train_batch_size=args.batch_size, lr_scheduler_type="cosine", warmup_steps=0,
                    max_grad_norm=1.0, max_length=None, report_to=[], use_cpu=True, save_strategy="no",
                    logging_steps=10**6, seed=7, dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=text, processing_class=tok, peft_config=peft_config)
    trainer.train_dataset = datasets.Dataset.from_list(
        [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows])
    result = trainer.train()
    return args.steps * args.batch_size / result.metrics["train_runtime"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = pair_rows(args.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = write_run(root / "build", rows, args.max_length)
        results = {
            "TRL DPOTrainer (random order)": run_trl(rows, root / "trl", args),
            "dataforge (random order)": run_dataforge(run, root / "df-random", args, "random"),
            "dataforge (length-grouped, default)": run_dataforge(run, root / "df-grouped", args, "length_grouped"),
        }
    trl = results["TRL DPOTrainer (random order)"]
    print("| side | trained pairs/s | vs TRL |\n| --- | ---: | ---: |")
    for name, pps in results.items():
        print(f"| {name} | {pps:.2f} | {pps / trl:.2f}x |")


if __name__ == "__main__":
    main()
