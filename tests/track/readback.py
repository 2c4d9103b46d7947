"""Reading what each tracker wrote, with the library's own reader (or its file format), for tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def wandb_records(run_dir: Path) -> list:
    """Every record of an offline run's .wandb file: W&B's LevelDB-style log (7-byte file header,
    32 KiB blocks, each chunk: crc32, length, type FULL/FIRST/MIDDLE/LAST) of protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # FULL, LAST
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def wandb_run(wandb_dir: Path, name: str) -> dict:
    """{"history": {step: {key: value}}, "summary": {...}, "config": {...}, "files": [...]} of the offline
    run named `name` under WANDB_DIR."""
    for run_dir in sorted((wandb_dir / "wandb").glob("offline-run-*")):
        recs = wandb_records(run_dir)
        runs = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        if not runs or runs[0].display_name != name:
            continue
        out: dict = {"history": {}, "summary": {}, "config": {}, "files": [], "run": runs[0]}
        for r in recs:
            kind = r.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                out["history"].setdefault(int(items.pop("_step")), {}).update(items)
            elif kind == "summary":
                for i in r.summary.update:
                    out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
            elif kind in ("config", "run"):
                for i in (r.config if kind == "config" else r.run.config).update:
                    out["config"][i.key] = json.loads(i.value_json)
            elif kind == "files":
                out["files"] += [f.path for f in r.files.files]
        out["dir"] = run_dir
        return out
    raise AssertionError(f"no offline wandb run named {name} under {wandb_dir}")


def mlflow_run(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps], filter_string=f"attributes.run_name = '{name}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def tensorboard_texts(log_dir: Path) -> dict[str, str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag.removesuffix("/text_summary"): acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode()
            for tag in acc.Tags()["tensors"]}
