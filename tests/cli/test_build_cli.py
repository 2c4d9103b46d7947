"""The `dataforge build` command as a user runs it: quick mode, YAML errors, exit codes, no tracebacks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataforge.paths import pipelines_dir

CLI = [sys.executable, "-m", "dataforge"]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a.jsonl"
    rows = [{"instruction": f"Describe item number {i} of the inventory list.", "input": "",
             "output": f"Item {i} is a {['red', 'blue', 'green'][i % 3]} widget stored on shelf {i % 7}."} for i in range(40)]
    a.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = tmp_path / "b.csv"
    with open(b, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        for i in range(30):
            w.writerow([f"Translate phrase {i} into plain words.", f"phrase-{i}", f"Phrase {i} means step {i * 3} of the guide."])
    return a, b


def test_quick_mode_builds_named_sources_from_flags(tmp_path):
    a, b = _write_inputs(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("build", "--input", f"domain={a}", "--input", str(b), "--template", "alpaca", "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["sources"]) == {"domain", "b"}
    assert manifest["sources"]["domain"]["read"] == 40 and manifest["sources"]["b"]["read"] == 30
    assert manifest["config"]["template"]["name"] == "alpaca"


def test_bad_config_reports_field_paths_with_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("inputs: [{path: x.jsonl}]\ndedupe:\n  near:\n    threshold: 1.5\n    shingles: 3\nsplit:\n  train: lots\n")
    proc = run_cli("build", str(cfg))
    assert proc.returncode == 2
    assert "dedupe.near.threshold: must be between 0 and 1" in proc.stderr
    assert "dedupe.near.shingles: unknown key" in proc.stderr
    assert "split.train" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_input_file_is_a_clear_error(tmp_path):
    proc = run_cli("build", "--input", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "nope.jsonl" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_on_error_fail_stops_at_the_first_bad_record(tmp_path):
    a, _ = _write_inputs(tmp_path)
    lines = a.read_text().splitlines()
    lines[6] = lines[6][:25]  # truncate line 7
    a.write_text("\n".join(lines) + "\n")
    proc = run_cli("build", "--input", str(a), "-o", str(tmp_path / "o"), "--on-error", "fail", "-q")
    assert proc.returncode == 2
    assert f"{a}:7" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = run_cli("build", "--input", str(a), "-o", str(tmp_path / "o2"), "-q")
    assert ok.returncode == 0, ok.stderr
    rejects = [json.loads(x) for x in (tmp_path / "o2" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["origin_line"]) for r in rejects if r["stage"] == "collect"] == [("parse_error", 7)]


def test_help_documents_every_config_key():
    proc = run_cli("build", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for key in ("dedupe.near.threshold", "decontaminate.ngram", "split.stratify_by_source", "mix.proportions",
                "tokenize.pad_to_multiple_of", "tokenize.overlength", "clean.output.max_chars"):
        assert key in text


@pytest.mark.slow
def test_killed_build_leaves_nothing_a_rerun_would_trust(tmp_path):
    """kill -9 the demo build at several moments; a re-run must give the same dataset as a clean run."""
    pipeline = pipelines_dir() / "build_alpaca.yaml"
    clean_out = tmp_path / "clean"
    ok = run_cli("build", str(pipeline), "-o", str(clean_out), "-q")
    assert ok.returncode == 0, ok.stderr
    expected = json.loads((clean_out / "manifest.json").read_text())["fingerprint"]
    for delay in (1.5, 3.0, 4.5):
        out = tmp_path / f"killed-{delay}"
        proc = subprocess.Popen([*CLI, "build", str(pipeline), "-o", str(out), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "manifest.json").exists():  # finished before the kill: must be complete and right
            assert json.loads((out / "manifest.json").read_text())["fingerprint"] == expected
        rerun = run_cli("build", str(pipeline), "-o", str(out), "-q")
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads((out / "manifest.json").read_text())["fingerprint"] == expected


RC_FIXTURE = Path(__file__).parents[1] / "data" / "fixtures_dedupe" / "reading_comprehension.jsonl"


def _copies(path: Path) -> Path:
    """12 records: 6 answers of 50 words and 6 copies of them with one word changed."""
    words = [f"word{i}" for i in range(400)]
    rows = []
    for k in range(6):
        answer = [words[(k * 53 + 7 * n) % 400] for n in range(50)]
        rows.append({"instruction": f"Describe catalogue entry {k}.", "input": "", "output": " ".join(answer)})
        rows.append({"instruction": f"Describe catalogue entry {k}.", "input": "",
                     "output": " ".join(answer[:20] + ["changed"] + answer[21:])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_summary_gives_the_near_duplicate_share_of_each_source_and_warns_above_the_limit(tmp_path):
    copies = _copies(tmp_path / "copies.jsonl")
    out = tmp_path / "out"
    proc = run_cli("build", "--input", f"rc={RC_FIXTURE}", "--input", f"copies={copies}", "-o", str(out),
                   "--set", "tokenize.enabled=false", "-q")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "near duplicates removed: copies 50.0% (6 of 12), rc 0.0% (0 of 21)" in text
    assert "warning: near-dedupe removed 50.0% of source 'copies' (more than dedupe.near.warn_share 0.2)" in text
    assert "'rc'" not in text
    step = next(s for s in json.loads((out / "manifest.json").read_text())["steps"] if s["name"] == "dedupe_near")
    assert step["stats"]["by_source"]["copies"] == {"in": 12, "removed": 6, "skipped": False}

    out2 = tmp_path / "out2"
    proc = run_cli("build", "--input", f"rc={RC_FIXTURE}", "--input", f"copies={copies}", "-o", str(out2),
                   "--set", "tokenize.enabled=false", "--set", "dedupe.near.skip_sources=[copies]", "-q")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "near duplicates removed: copies skipped, rc 0.0% (0 of 21)" in text and "warning" not in text


def test_mix_naming_an_unknown_source_fails_before_any_work(tmp_path):
    a, b = _write_inputs(tmp_path)
    cfg = tmp_path / "mix.yaml"
    out = tmp_path / "out"
    cfg.write_text(f"inputs:\n  - {{path: {a}, source: domain}}\n  - {{path: {b}, source: general}}\n"
                   f"output: {out}\nmix:\n  proportions: {{domain: 0.8, genral: 0.2}}\n")
    proc = run_cli("build", str(cfg), "-q")
    assert proc.returncode == 2
    assert f"invalid config {cfg}" in proc.stderr
    assert "mix.proportions.genral: no input has source 'genral' (input sources: domain, general)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing was collected, deduplicated or split


PUBLIC = Path(__file__).parents[1] / "data" / "fixtures_public"


def test_labels_that_change_meaning_stop_the_build_naming_file_and_field(tmp_path):
    proc = run_cli("build", "--input", str(PUBLIC / "kto_labels.jsonl"), "-o", str(tmp_path / "out"), "-q",
                   "--set", "tokenize.enabled=false")
    assert proc.returncode == 2
    assert "kto_labels.jsonl:1" in proc.stderr and "field 'label'" in proc.stderr and "ignore_fields" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_summary_and_manifest_report_ignored_fields_and_sources_that_keep_nothing(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "3+3?", "answer": "6"}\n')
    cfg = tmp_path / "build.yaml"
    cfg.write_text(f"""inputs:
  - {{path: {PUBLIC / 'self_instruct_seeds.jsonl'}, source: seeds}}
  - {{path: {PUBLIC / 'plain_text.txt'}, source: text}}
  - {{path: {PUBLIC / 'plain_text.jsonl'}, source: text}}
  - {{path: {PUBLIC / 'kto_labels.jsonl'}, source: kto, ignore_fields: [label]}}
  - {{path: {qa}, source: qa}}
split: {{train: 0.5, val: 0, test: 0}}
tokenize: {{enabled: false}}
""")
    proc = run_cli("build", str(cfg), "-o", str(tmp_path / "out"), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "seeds: ignored fields: id (4 records), is_classification (4 records), name (4 records)" in proc.stdout
    assert "kto: ignored fields: label (4 records)" in proc.stdout
    assert "qa: ignored fields: answer (2 records), question (2 records)" in proc.stdout
    assert "WARNING: source 'qa' kept no record: all 2 read were rejected (missing_field 2)" in proc.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    collect = next(s for s in manifest["steps"] if s["name"] == "collect")
    assert collect["stats"]["ignored_fields"]["text"] == {"meta": 5}
    assert collect["stats"]["warnings"] == ["source 'qa' kept no record: all 2 read were rejected "
                                            "(missing_field 2); check its format and field names"]
    counts = {s: (v["read"], v["kept"], v["rejected_by_reason"]) for s, v in manifest["sources"].items()}
    assert counts == {"seeds": (7, 5, {"missing_field": 2}), "text": (9, 8, {"empty_output": 1}),
                      "kto": (4, 4, {}), "qa": (2, 0, {"missing_field": 2})}


def test_summary_reports_placeholders_and_length_cuts_per_source(tmp_path):
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps([
        {"instruction": f"Question {i}: who are you?", "input": "",
         "output": f"I am {{{{name}}}}, an assistant built by {{{{author}}}} (answer {i})."} for i in range(12)]))
    long = tmp_path / "long.jsonl"
    story = "今日は雨が降っているので、図書館で古い地図を調べました。🌧️📚 आज बारिश हो रही है। اليوم تمطر. "
    rows = [{"instruction": f"Retell story {i}.", "input": "", "output": story * 8} for i in range(10)]
    rows += [{"instruction": f"Follow rule set {i}: " + story * 4, "input": "", "output": story * 4} for i in range(3)]
    long.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "out"
    proc = run_cli("build", "-i", str(identity), "-i", str(long), "-o", str(out), "--max-length", "256",
                   "--fill", "name=Forge", "--set", "split.val=0", "--set", "split.test=0",
                   "--set", "dedupe.near.enabled=false")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    clean_stats = next(s["stats"] for s in manifest["steps"] if s["name"] == "clean")
    assert clean_stats == {"placeholders": {"identity": {"{{author}}": 12}}, "filled": {"identity": {"{{name}}": 12}}}
    assert manifest["tokenize"]["counts"]["train"]["by_source"] == {
        "long": {"truncated": 10, "dropped": 0, "prompt_truncated_away": 3}}
    assert manifest["sources"]["long"]["rejected_by_reason"] == {"prompt_truncated_away": 3}
    text = " ".join(proc.stdout.split())
    assert "filled placeholders: identity: {{name}} in 12 records" in text
    assert "warning: placeholders left in the data: identity: {{author}} in 12 records" in text
    assert ("over max_length 256: long: 10 truncated, 3 dropped as prompt_truncated_away (instruction would be cut)"
            in text)
    kept = [json.loads(x) for x in (out / "splits" / "train.alpaca.jsonl").read_text().splitlines()]
    assert {r["output"] for r in kept if r["source"] == "identity"} == {
        f"I am Forge, an assistant built by {{{{author}}}} (answer {i})." for i in range(12)}


def _unprivileged() -> list[str]:
    """A prefix that makes permission bits bind: root reads and writes through chmod 000 unless it
    drops CAP_DAC_OVERRIDE (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permission bits cannot be made to bind")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _records_file(tmp_path: Path) -> Path:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Spell the number {i}.", "output": f"{i} is spelled out."}) + "\n"
                            for i in range(6)))
    return path


def test_unreadable_input_exits_2_naming_the_file(tmp_path):
    path = _records_file(tmp_path)
    path.chmod(0)
    proc = subprocess.run([*_unprivileged(), *CLI, "build", "-i", str(path), "-t", "alpaca", "-o", str(tmp_path / "out"),
                           "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}: Permission denied" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["under_a_file", "read_only_folder"])
def test_unwritable_output_exits_2_naming_the_folder(tmp_path, where):
    path = _records_file(tmp_path)
    prefix: list[str] = []
    if where == "under_a_file":
        out = tmp_path / "a.jsonl" / "run"
        reason = "Not a directory (a part of this path is a file, not a folder)"
    else:
        prefix = _unprivileged()
        (tmp_path / "ro").mkdir(mode=0o555)
        out = tmp_path / "ro" / "run"
        reason = "Permission denied"
    proc = subprocess.run([*prefix, *CLI, "build", "-i", str(path), "-t", "alpaca", "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{out}: {reason}" in proc.stderr and "Traceback" not in proc.stderr



def test_engine_flag_streams_the_build_and_refuses_unknown_engines(tmp_path):
    a, b = _write_inputs(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("build", "--input", f"domain={a}", "--input", str(b), "-o", str(out), "-q", "--engine", "stream")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"] == "stream"
    assert manifest["sources"]["domain"]["read"] == 40 and manifest["sources"]["b"]["read"] == 30
    assert not (out / ".stream").exists()

    proc = run_cli("build", "--input", str(a), "-o", str(tmp_path / "o2"), "--engine", "spark")
    assert proc.returncode == 2
    assert "unknown engine 'spark'" in proc.stderr and "auto, local, stream, ray" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_auto_engine_streams_above_the_input_size_threshold(tmp_path, monkeypatch):
    from dataforge.data import engines

    a, _ = _write_inputs(tmp_path)
    assert engines.choose_engine("auto", [a]) == "local"
    monkeypatch.setattr(engines, "AUTO_STREAM_BYTES", a.stat().st_size - 1)
    assert engines.choose_engine("auto", [a]) == "stream"
    assert engines.choose_engine("local", [a]) == "local"
