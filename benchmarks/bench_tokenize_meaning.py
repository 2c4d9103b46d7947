"""Does tokenizing keep what long multilingual records mean? Counted over the kept sequences.

    .venv/bin/python benchmarks/bench_tokenize_meaning.py --n 2000 --max-length 512

Data: synthetic Alpaca records written here (Japanese, emoji, Hindi, Arabic and English words; a
short instruction, an input that is often long, an output that ends with the literal text
`</s> <s> end`), rendered with the alpaca template and tokenized with the tiny tokenizer.
Counted: records kept without their whole instruction in the decoded prompt, sequences holding
U+FFFD when decoded (a character split by a cut), and EOS ids before a sequence's end.
"""

from __future__ import annotations

import argparse
import random

import polars as pl

from dataforge.config.build import TokenizeConfig
from dataforge.data.record import RECORD_SCHEMA
from dataforge.data.templates import apply_template, load_template
from dataforge.data.tokenize import IGNORE_INDEX, tokenize_records
from dataforge.models import load_tokenizer

WORDS = ["今日は雨です", "地図を調べました", "🌧️📚", "आज बारिश", "पुराने नक्शे", "اليوم تمطر", "الخرائط القديمة",
         "library", "maps", "rain"]


def records(n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = [{"id": f"m:0:{i + 1}", "source": "multi", "origin_file": "m.jsonl", "origin_line": i + 1, "system": "",
             "history": [], "instruction": f"Task {i}: " + text(rng.randint(2, 10)),
             "input": text(rng.choice([0, 0, 50, 200])), "output": text(rng.randint(10, 60)) + " </s> <s> end"}
            for i in range(n)]
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="records")
    ap.add_argument("--max-length", type=int, default=512, help="tokenize.max_length")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    args = ap.parse_args()
    tok, template = load_tokenizer("tiny"), load_template("alpaca")
    frame = apply_template(records(args.n, args.seed), template, seed=0, variants=False)
    res = tokenize_records(frame, tok, TokenizeConfig(max_length=args.max_length), template=template)
    kept = frame.filter(pl.col("id").is_in(res.table["id"].to_pylist()))
    lost = split = early_eos = 0
    for row, ids, labels in zip(kept.iter_rows(named=True), res.table["input_ids"].to_pylist(),
                                res.table["labels"].to_pylist(), strict=True):
        first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
        lost += row["instruction"] not in tok.decode(ids[:first])
        split += "\ufffd" in tok.decode(ids)
        early_eos += tok.eos_token_id in ids[:-1]
    counts = {k: v for k, v in res.counts.items() if k != "by_source"}
    print(f"{args.n:,} records at max_length {args.max_length}: {counts}, kept {res.table.num_rows:,}")
    print(f"kept without their whole instruction {lost:,}; with a split character {split:,}; EOS before the end {early_eos:,}")


if __name__ == "__main__":
    main()
