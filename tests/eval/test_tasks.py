"""Task and suite YAML: every shipped file validates, and every mistake names its file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataforge.errors import ConfigError, InputError
from dataforge.eval.tasks import (
    MultipleChoiceTask,
    find_task_files,
    load_suite,
    load_task,
    read_records,
)
from dataforge.paths import evals_dir


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_task_and_suite_validates(tmp_path):
    tasks = find_task_files()
    assert len(tasks) >= 8
    for path in tasks:
        task = load_task(path, variables={"build": str(tmp_path)})
        assert task.name == path.stem
    suites = sorted(evals_dir().glob("*.yaml"))
    assert {p.stem for p in suites} >= {"regression", "leaderboard"}
    for path in suites:
        suite = load_suite(path, {"build": str(tmp_path)})
        assert all(t.yaml_path.is_file() for t in suite.tasks)


def test_every_shipped_leaderboard_fixture_is_read_with_its_few_shot_split():
    for path in (evals_dir() / "tasks" / "leaderboard").glob("*.yaml"):
        task = load_task(path)
        spec = task.spec
        assert isinstance(spec, MultipleChoiceTask)
        assert read_records(task).rows, path
        if spec.shots:
            assert len(read_records(task, spec.fewshot.split).rows) >= spec.shots


def test_wrong_schema_names_the_file_and_every_bad_field(tmp_path):
    bad = _write(tmp_path / "t.yaml", "name: t\ntype: multiple_choice\ndata: {path: x.jsonl}\nshots: -1\nprompts: oops\n")
    with pytest.raises(ConfigError) as err:
        load_task(bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "shots: must be >= 0" in msg
    assert "prompts: unknown key" in msg


def test_unknown_task_type_lists_the_types(tmp_path):
    bad = _write(tmp_path / "t.yaml", "name: t\ntype: ranking\ndata: {path: x.jsonl}\n")
    with pytest.raises(ConfigError, match="type: must be one of generation, perplexity, multiple_choice"):
        load_task(bad)


def test_fields_format_needs_its_fields_and_leaderboard_formats_refuse_them(tmp_path):
    a = _write(tmp_path / "a.yaml", "name: a\ntype: multiple_choice\ndata: {path: x.jsonl}\nprompt: 'Q: {q}'\n")
    with pytest.raises(ConfigError, match="needs choices, gold"):
        load_task(a)
    b = _write(tmp_path / "b.yaml", "name: b\ntype: multiple_choice\nformat: arc\ndata: {path: x}\nprompt: 'Q: {q}'\n")
    with pytest.raises(ConfigError, match="format 'arc' has its own prompt; remove prompt"):
        load_task(b)


def test_data_needs_a_local_path_or_a_hub_id(tmp_path):
    bad = _write(tmp_path / "t.yaml", "name: t\ntype: perplexity\ndata: {split: test}\n")
    with pytest.raises(ConfigError, match="data: .*give `path`"):
        load_task(bad)


def test_an_undefined_variable_says_how_to_define_it(tmp_path):
    task = _write(tmp_path / "t.yaml", "name: t\ntype: perplexity\ndata: {path: '${build}/corpus.txt'}\n")
    with pytest.raises(ConfigError, match=r"\$\{build\} is not defined; pass --var build=VALUE"):
        load_task(task)


def test_variables_are_paths_from_the_current_directory_and_cli_values_win(tmp_path, monkeypatch):
    _write(tmp_path / "evals" / "t.yaml", "name: t\ntype: perplexity\ndata: {path: '${build}/c.txt'}\n")
    _write(tmp_path / "evals" / "s.yaml", "name: s\nvars: {build: runs/default}\ntasks: [{task: t.yaml, tag: general}]\n")
    monkeypatch.chdir(tmp_path)
    suite = load_suite("evals/s.yaml")
    assert suite.tasks[0].data_path == tmp_path / "runs" / "default" / "c.txt"
    suite = load_suite("evals/s.yaml", {"build": "other"})
    assert suite.tasks[0].data_path == tmp_path / "other" / "c.txt"
    builtin = load_task(evals_dir() / "tasks" / "general_heldout_perplexity.yaml")
    assert builtin.data_path.is_file()


def test_a_suite_reports_every_broken_task_at_once(tmp_path):
    _write(tmp_path / "ok.yaml", "name: ok\ntype: perplexity\ndata: {path: c.txt}\n")
    _write(tmp_path / "bad1.yaml", "name: bad1\ntype: perplexity\n")
    _write(tmp_path / "bad2.yaml", "name: bad2\ntype: generation\ndata: {path: x.jsonl}\nmax_tokens: 0\n")
    suite = _write(tmp_path / "s.yaml", "name: s\ntasks:\n  - {task: ok.yaml, tag: general}\n"
                   "  - {task: bad1.yaml, tag: general}\n  - {task: bad2.yaml, tag: domain}\n  - {task: ok.yaml, tag: banana}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(suite)
    msg = str(err.value)
    assert "tasks.3.tag" in msg   # schema errors of the suite itself come first, alone
    suite.write_text("name: s\ntasks:\n  - {task: ok.yaml, tag: general}\n  - {task: bad1.yaml, tag: general}\n"
                     "  - {task: bad2.yaml, tag: domain}\n  - {task: ok.yaml, tag: domain}\n"
                     "gate:\n  - {task: nope, metric: acc, min: 0.5}\n")
    with pytest.raises(ConfigError) as err:
        load_suite(suite)
    msg = str(err.value)
    assert "tasks.1.task (bad1.yaml): data: required, but missing" in msg
    assert "tasks.2.task (bad2.yaml): max_tokens: must be >= 1" in msg
    assert "task names must be unique, repeated: ok" in msg
    assert "gate.0.task: 'nope' is not a task of this suite" in msg


def test_only_runs_the_named_tasks_and_rejects_unknown_names():
    suite = load_suite(evals_dir() / "leaderboard.yaml", only=["mmlu", "hellaswag"])
    assert [t.name for t in suite.tasks] == ["hellaswag", "mmlu"]
    with pytest.raises(ConfigError, match="--task arc: not in this suite"):
        load_suite(evals_dir() / "leaderboard.yaml", only=["arc"])


def test_where_keeps_only_matching_records_with_their_line_numbers(tmp_path):
    rows = [{"source": s, "text": f"t{i}"} for i, s in enumerate(["domain", "general", "domain"])]
    _write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(_write(tmp_path / "t.yaml", "name: t\ntype: perplexity\n"
                            "data: {path: d.jsonl, where: {source: domain}}\n"))
    got = read_records(task)
    assert [r["text"] for r in got.rows] == ["t0", "t2"]
    assert got.lines == [1, 3]


def test_a_missing_split_file_names_the_folder(tmp_path):
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "test.jsonl", '{"question": "q"}\n')
    task = load_task(_write(tmp_path / "t.yaml", "name: t\ntype: multiple_choice\nformat: arc\n"
                            "data: {path: data}\nshots: 1\n"))
    with pytest.raises(InputError, match=r"data: no train.jsonl, train.json or train.parquet"):
        read_records(task, "train")


def test_a_bad_json_line_names_file_and_line(tmp_path):
    _write(tmp_path / "d.jsonl", '{"text": "a"}\n{"text": \n')
    task = load_task(_write(tmp_path / "t.yaml", "name: t\ntype: perplexity\ndata: {path: d.jsonl}\n"))
    with pytest.raises(InputError, match=r"d.jsonl:2: not valid JSON"):
        read_records(task)
