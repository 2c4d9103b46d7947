"""What a kill leaves behind is never mistaken for a checkpoint, and the log resumes cleanly."""

from __future__ import annotations

import json

from dataforge.train.checkpoint import STATE_FILE, checkpoint_dirs
from dataforge.train.outputs import TrainLog


def test_only_whole_checkpoints_count(tmp_path):
    root = tmp_path / "checkpoints"
    whole = root / "checkpoint-00000004"
    whole.mkdir(parents=True)
    (whole / STATE_FILE).write_text("{}")
    (root / ".checkpoint-00000008.tmp").mkdir()          # killed while saving
    (root / "checkpoint-00000012").mkdir()               # no trainer state: not complete
    (root / "checkpoint-00000016.old").mkdir()
    older = root / "checkpoint-00000002"
    older.mkdir()
    (older / STATE_FILE).write_text("{}")
    assert checkpoint_dirs(root) == [older, whole]
    assert checkpoint_dirs(tmp_path / "missing") == []


def test_resumed_log_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 8)] + [{"step": 4, "eval_loss": 0.5}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "lo')
    log = TrainLog(path, resume_step=4, enabled=True)
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == log.rows == [r for r in rows if r["step"] <= 4]
    log.add({"step": 5, "loss": 0.1})
    assert json.loads(path.read_text().splitlines()[-1]) == {"step": 5, "loss": 0.1}
    assert log.last("eval_loss") == 0.5
