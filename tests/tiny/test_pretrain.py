import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from dataforge.cli.main import app
from dataforge.tiny.folder import verify_checksums
from dataforge.tiny.pretrain import PretrainConfig, lr_factor, pack_documents


def test_packing_lays_documents_end_to_end_between_bos_and_eos():
    blocks = pack_documents([[10, 11], [12], [13, 14, 15]], seq_len=4, bos_id=1, eos_id=2)
    # stream: 1 10 11 2 | 1 12 2 1 | 13 14 15 2 -> three full blocks, nothing padded
    assert blocks.tolist() == [[1, 10, 11, 2], [1, 12, 2, 1], [13, 14, 15, 2]]
    assert pack_documents([[5]], seq_len=4, bos_id=1, eos_id=2).shape == (0, 4)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    cfg = PretrainConfig(steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    factors = [lr_factor(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(factors, factors[1:], strict=False))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataforge", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    result = CliRunner().invoke(app, ["tiny-model", "build", "-o", str(out), "--steps", "20", "--seq-len", "32",
                                      "--batch-size", "4", "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_build_writes_a_folder_transformers_can_load(built):
    out, _ = built
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok("Return the number of items.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    assert verify_checksums(out) == []


def test_build_info_records_the_run(built):
    out, output = built
    info = json.loads((out / "build_info.json").read_text())
    assert info["steps"] == 20 and info["config"]["seed"] == 3
    assert info["tokens_seen"] == 20 * 4 * 32
    assert len(info["corpus"]["sha256"]) == 64
    assert {"torch", "transformers", "tokenizers", "python"} <= set(info["versions"])
    ppl = info["heldout_perplexity"]
    assert ppl["trained"] < ppl["random_init"]  # 20 steps already move it off the uniform guess
    assert f"{ppl['trained']:,.1f}" in output


def test_info_verifies_checksums_and_fails_on_a_changed_file(built, tmp_path):
    out, _ = built
    ok = run_cli("tiny-model", "info", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "checksums OK" in ok.stdout
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "config.json").write_text((out / "config.json").read_text() + " ")
    bad = run_cli("tiny-model", "info", str(copy))
    assert bad.returncode == 2
    assert "config.json: checksum differs" in bad.stderr and "Traceback" not in bad.stderr


def test_build_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("tiny-model", "build", "-o", str(tmp_path), "--steps", "1", "--quiet")
    assert result.returncode == 2
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_bad_flag_values_are_config_errors_naming_the_field(tmp_path):
    result = run_cli("tiny-model", "build", "-o", str(tmp_path / "m"), "--seq-len", "4", "--quiet")
    assert result.returncode == 2
    assert "seq_len" in result.stderr and "Traceback" not in result.stderr
