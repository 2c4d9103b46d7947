"""The stream engine publishes exactly what the local engine does, chunk size whatever, and keeps
the accounting; a re-run is reused whole."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import polars as pl
import pytest

from dataforge.config.base import load_config, validate_config
from dataforge.config.build import BuildConfig
from dataforge.data.engines.stream import run_build_stream
from dataforge.data.pipeline import run_build
from dataforge.paths import pipelines_dir

PIPELINE = pipelines_dir() / "build_alpaca.yaml"
SPLITS = ("train", "val", "test")
# Small chunks and blocks, so the demo's ~600 records cross dozens of chunk and block boundaries.
SMALL = {"chunk_size": 37, "block_bytes": 2000}

WORDS = ("river stone lantern orbit maple quartz harbor violet ember canyon meadow signal falcon prism "
         "willow copper tundra beacon saffron glacier thimble orchard nebula cobalt juniper").split()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _write_corpus(folder: Path, n: int = 1500) -> dict[str, Path]:
    """Two sources shaped like public instruction sets: passages shared by several questions, exact
    copies far apart (so they fall in different chunks), one-word edits of long answers, multilingual
    text, special-token strings, a broken line and an empty answer."""
    rng = random.Random(7)
    passages = [" ".join(_sentence(rng, 12) for _ in range(4)) for _ in range(40)]
    alpaca, chats = [], []
    for i in range(n):
        out = " ".join(_sentence(rng, rng.randint(6, 14)) for _ in range(rng.randint(2, 5)))
        if i % 9 == 0:
            out += " Übersetzung: 河流 и «камень» </s> <|im_end|>"
        rec = {"instruction": f"Question {i}: {_sentence(rng, rng.randint(4, 9))}",
               "input": rng.choice(passages) if i % 3 == 0 else "", "output": out}
        if i % 2:
            chats.append({"conversations": [{"from": "human", "value": rec["instruction"] + " " + rec["input"]},
                                            {"from": "gpt", "value": out}]})
        else:
            alpaca.append(rec)
    for k in range(0, len(alpaca) - 500, 50):          # exact copies, 500 records later
        alpaca.insert(k + 500, dict(alpaca[k]))
    for k in range(3, len(alpaca) - 300, 30):          # one changed word in a long answer
        words = alpaca[k]["output"].split()
        if len(words) > 40:
            words[len(words) // 2] = "zeppelin"
            alpaca.insert(k + 300, {**alpaca[k], "output": " ".join(words)})
    alpaca[100]["output"] = ""
    lines = [json.dumps(r, ensure_ascii=False) for r in alpaca]
    lines.insert(500, '{"instruction": "broken", "output": ')
    paths = {"domain": folder / "domain.jsonl", "general": folder / "general.jsonl"}
    paths["domain"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    paths["general"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chats), encoding="utf-8")
    return paths


def _synthetic_config(paths: dict[str, Path], out: Path, **extra) -> BuildConfig:
    data = {"inputs": [{"path": str(paths["domain"]), "source": "domain", "format": "alpaca"},
                       {"path": str(paths["general"]), "source": "general", "format": "sharegpt"}],
            "output": str(out), "seed": 99,
            "dedupe": {"near": {"keep": "longest"}},
            "split": {"val": 0.05, "test": 120},
            "mix": {"proportions": {"domain": 0.6, "general": 0.4}},
            "tokenize": {"max_length": 96, "pack": True},
            **extra}
    return validate_config(BuildConfig, data, "test")


def _assert_same_build(local: Path, stream: Path, local_manifest: dict, stream_manifest: dict) -> None:
    assert stream_manifest["fingerprint"] == local_manifest["fingerprint"]
    for split in SPLITS:
        a, b = (pl.read_parquet(p / "splits" / f"{split}.parquet") for p in (local, stream))
        assert a.height > 0 and a.equals(b), split
        assert (local / "splits" / f"{split}.alpaca.jsonl").read_bytes() == \
            (stream / "splits" / f"{split}.alpaca.jsonl").read_bytes()
    tok_a, tok_b = (datasets.load_from_disk(str(p / "tokenized")) for p in (local, stream))
    for split in SPLITS:
        assert tok_a[split].features == tok_b[split].features
        assert tok_a[split].to_dict() == tok_b[split].to_dict(), split
    for name in ("rejects.jsonl", "clusters.jsonl", "contamination.jsonl"):
        assert sorted((local / name).read_text().splitlines()) == sorted((stream / name).read_text().splitlines())
    assert stream_manifest["sources"] == local_manifest["sources"]
    assert stream_manifest["splits"] == local_manifest["splits"]
    for a, b in zip(local_manifest["steps"], stream_manifest["steps"], strict=True):
        assert (a["name"], a["in"], a["out"], a["dropped"]) == (b["name"], b["in"], b["out"], b["dropped"])
    assert not (stream / ".stream").exists()


def _accounting_holds(run: Path, manifest: dict) -> None:
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    kept = pl.concat([pl.read_parquet(run / "splits" / f"{s}.parquet") for s in SPLITS])
    for source, counts in manifest["sources"].items():
        n_kept = kept.filter(pl.col("source") == source)["id"].n_unique()
        n_rej = sum(1 for r in rejects if r["source"] == source)
        assert (counts["kept"], counts["rejected"]) == (n_kept, n_rej)
        assert counts["read"] + counts.get("repeated", 0) == n_kept + n_rej


def test_demo_build_streamed_in_small_chunks_equals_the_local_build(tmp_path):
    local = run_build(load_config(BuildConfig, PIPELINE, {"output": str(tmp_path / "local")}),
                      base_dir=PIPELINE.parent, show_progress=False)
    cfg = load_config(BuildConfig, PIPELINE, {"output": str(tmp_path / "stream")})
    stream = run_build_stream(cfg, base_dir=PIPELINE.parent, show_progress=False, **SMALL)
    _assert_same_build(local.run_dir, stream.run_dir, local.manifest, stream.manifest)
    _accounting_holds(stream.run_dir, stream.manifest)
    assert stream.manifest["engine"] == "stream"

    again = run_build_stream(cfg, base_dir=PIPELINE.parent, show_progress=False, **SMALL)
    assert again.reused == ["all"] and again.manifest["fingerprint"] == stream.manifest["fingerprint"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    return _write_corpus(folder), folder


def test_synthetic_build_with_mix_packing_and_keep_longest_matches_local(synthetic):
    paths, folder = synthetic
    local = run_build(_synthetic_config(paths, folder / "local"), show_progress=False)
    stream = run_build_stream(_synthetic_config(paths, folder / "stream"), show_progress=False,
                              chunk_size=250, block_bytes=20_000)
    reasons = {r for s in local.manifest["sources"].values() for r in s["rejected_by_reason"]}
    # The corpus exercises every decision the engines must agree on.
    assert {"exact_duplicate", "near_duplicate", "parse_error", "empty_output", "downsampled"} <= reasons
    assert "packing" in local.manifest["tokenize"]
    assert local.manifest["tokenize"]["counts"]["train"]["truncated"] > 0
    _assert_same_build(local.run_dir, stream.run_dir, local.manifest, stream.manifest)
    _accounting_holds(stream.run_dir, stream.manifest)


def test_a_build_failing_in_its_last_pass_publishes_nothing(synthetic):
    """Outputs are renamed into the run folder only after the whole build and its accounting pass: a
    record too long under `overlength: error`, found while writing, leaves no split, no tokenized
    data, no manifest and no spool behind."""
    from dataforge.errors import InputError

    paths, folder = synthetic
    cfg = _synthetic_config(paths, folder / "failing", mix={}, tokenize={"max_length": 40, "overlength": "error"})
    with pytest.raises(InputError, match="tokenize.overlength is 'error'"):
        run_build_stream(cfg, show_progress=False, chunk_size=300)
    left = sorted(str(p.relative_to(folder / "failing")) for p in (folder / "failing").rglob("*") if p.is_file())
    assert left == [".dataforge-build"]


def test_a_mix_that_repeats_records_keeps_the_accounting_on_both_engines(synthetic):
    """`mix.total` above what the sources hold repeats records (`<id>#rep<k>`). Before, every such
    build failed its own accounting check; now the copies the mix made count beside the records read
    (read + repeated = kept + rejected), on both engines alike."""
    paths, folder = synthetic
    mix, tok = {"proportions": {"domain": 0.5, "general": 0.5}, "total": 3000}, {"max_length": 512}
    local = run_build(_synthetic_config(paths, folder / "rep-local", mix=mix, tokenize=tok), show_progress=False)
    stream = run_build_stream(_synthetic_config(paths, folder / "rep-stream", mix=mix, tokenize=tok),
                              show_progress=False, chunk_size=250, block_bytes=20_000)
    _assert_same_build(local.run_dir, stream.run_dir, local.manifest, stream.manifest)
    train = pl.read_parquet(local.run_dir / "splits" / "train.parquet")
    copies = train.filter(pl.col("id").str.contains("#rep"))
    assert train.height == 3000 and copies.height > 0
    for source, counts in local.manifest["sources"].items():
        rows = train.filter(pl.col("source") == source)
        n_copies = copies.filter(pl.col("source") == source).height
        assert counts.get("repeated", 0) == n_copies == local.manifest["mix"]["repeated"].get(source, 0) > 0
        assert counts["by_split"]["train"] == rows.height
        assert counts["read"] + n_copies == counts["kept"] + counts["rejected"]
    _accounting_holds(stream.run_dir, stream.manifest)
