"""`dataforge self-instruct` on bad input: one clear message, exit code 2, no traceback, nothing lost."""

from __future__ import annotations

import json
import sys

from si_helpers import FIXTURES

from dataforge.cli.main import main


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["dataforge", "self-instruct", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def base_args(tmp_path, seeds=None) -> list[str]:
    return ["--seeds", str(seeds or FIXTURES / "seed_tasks.jsonl"), "--output", str(tmp_path / "out"), "-q",
            "--max-prompts", "1", "--batch-size", "1", "--prompt-style", "completion",
            "--set", "self_instruct.sampling.max_tokens=8", "--set", "self_instruct.instances_sampling.max_tokens=8"]


def test_seed_record_missing_a_field(tmp_path, monkeypatch, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Fine.", "output": "ok"}) + "\n"
                     + json.dumps({"instruction": "No output here.", "input": "x"}) + "\n")
    code, _, err = run_cli(base_args(tmp_path, seeds), monkeypatch, capsys)
    assert code == 2
    assert f"{seeds}:2: field 'output'" in " ".join(err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_empty_seed_file(tmp_path, monkeypatch, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n")
    code, _, err = run_cli(base_args(tmp_path, seeds), monkeypatch, capsys)
    assert code == 2 and "no seed tasks" in err and "Traceback" not in err


def test_model_path_that_does_not_exist(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli([*base_args(tmp_path), "--model", str(tmp_path / "missing-model")], monkeypatch, capsys)
    assert code == 2 and "model path does not exist" in err and "Traceback" not in err


def test_endpoint_that_refuses_connections(tmp_path, monkeypatch, capsys):
    args = [*base_args(tmp_path), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
            "--set", "backend.max_retries=1", "--set", "backend.backoff_s=0.01"]
    code, _, err = run_cli(args, monkeypatch, capsys)
    flat = " ".join(err.split())
    assert code == 2 and "failed after 2 attempts" in flat and "cannot connect" in flat and "Traceback" not in err


def test_bad_config_value_names_its_path(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli([*base_args(tmp_path), "--set", "filters.novelty_threshold=2"], monkeypatch, capsys)
    assert code == 2 and "filters.novelty_threshold: must be between 0 and 1" in err


def test_a_small_run_prints_its_summary(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(base_args(tmp_path), monkeypatch, capsys)
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert f"of {manifest['accounting']['candidates']} candidates" in out
    assert manifest["num_prompts"] == 1


def test_chat_prompts_to_a_base_model_point_to_completion_style(tmp_path, monkeypatch, capsys):
    """The tiny model has a chat template but is a base model: through it, it writes no task list."""
    args = base_args(tmp_path)
    args[args.index("completion")] = "chat"
    code, out, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0
    acc = json.loads((tmp_path / "out" / "manifest.json").read_text())["accounting"]
    assert acc["unparseable_completions"] == 1 and acc["candidates"] == 0
    assert "1 completions for new instructions held none that could be parsed" in out
    assert "--prompt-style completion" in out


def test_completion_prompts_get_no_chat_hint(tmp_path, monkeypatch, capsys):
    code, out, _ = run_cli(base_args(tmp_path), monkeypatch, capsys)
    assert code == 0 and "--prompt-style completion" not in out
