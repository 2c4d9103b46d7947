"""The Ray engine publishes what the local engine publishes: on a local Ray runtime, on a real
two-node cluster driven through the CLI, and when a worker dies in the middle of a build."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import polars as pl
import pytest

from dataforge.config.base import load_config
from dataforge.config.build import BuildConfig
from dataforge.data.pipeline import run_build
from dataforge.data.stage import BuildContext, Stage, StageResult
from dataforge.data.stages import BUILD_STAGES
from dataforge.paths import pipelines_dir

ray = pytest.importorskip("ray", reason="the Ray engine needs ray: pip install -e '.[ray]'")
pytest.importorskip("ray.data", reason="the Ray engine needs Ray Data: pip install -e '.[ray]'")

from dataforge.data.engines.ray_engine import run_build_ray  # noqa: E402

PIPELINE = pipelines_dir() / "build_alpaca.yaml"
SPLITS = ("train", "val", "test")
ROOT = Path(__file__).resolve().parents[2]


def _config(out: Path) -> BuildConfig:
    return load_config(BuildConfig, PIPELINE, {"output": str(out)})


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return run_build(_config(tmp_path_factory.mktemp("local") / "run"), base_dir=PIPELINE.parent, show_progress=False)


@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime for the module: starting Ray costs more than a demo build."""
    ray.init(num_cpus=2, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the stage below travels by value
    yield
    ray.shutdown()


def _published(run_dir: Path) -> dict:
    """What training reads: every split's ids and the token ids of every tokenized row, in order."""
    tok = datasets.load_from_disk(str(run_dir / "tokenized"))
    return {s: {"ids": pl.read_parquet(run_dir / "splits" / f"{s}.parquet")["id"].to_list(),
                "tokens": tok[s]["input_ids"], "labels": tok[s]["labels"]} for s in SPLITS}


def _rejected_ids(run_dir: Path) -> list[str]:
    files = sorted((run_dir / "rejects").glob("part-*.jsonl")) if (run_dir / "rejects").is_dir() else [run_dir / "rejects.jsonl"]
    return sorted(json.loads(line)["id"] for f in files for line in f.read_text(encoding="utf-8").splitlines())


def _assert_same_build(ray_dir: Path, local) -> None:
    manifest = json.loads((ray_dir / "manifest.json").read_text())
    assert manifest["fingerprint"] == local.manifest["fingerprint"]
    assert manifest["sources"] == local.manifest["sources"]
    assert _published(ray_dir) == _published(local.run_dir)
    assert _rejected_ids(ray_dir) == _rejected_ids(local.run_dir)


def test_demo_build_on_a_local_ray_runtime_matches_the_local_engine(ray_runtime, local_run, tmp_path):
    """One input given as a `file://` URL: it goes through the object-store path (each worker fetches
    it with fsspec), and only `origin_file` (left out of the fingerprint) tells it apart."""
    cfg = _config(tmp_path / "run")
    domain = BuildContext(cfg, PIPELINE.parent).resolve(cfg.inputs)[0]
    url = Path(domain.path).as_uri()
    cfg = cfg.model_copy(update={"inputs": [domain.model_copy(update={"path": url}), *cfg.inputs[1:]]})
    result = run_build_ray(cfg, base_dir=PIPELINE.parent, show_progress=False)
    _assert_same_build(result.run_dir, local_run)
    assert result.manifest["engine"] == "ray"
    assert result.manifest["inputs"][-1]["path"] == url
    train = pl.read_parquet(result.run_dir / "splits" / "train.parquet")
    assert set(train.filter(pl.col("source") == domain.source)["origin_file"]) == {url}
    steps = {s["name"]: s for s in result.manifest["steps"]}
    local_steps = {s["name"]: s for s in local_run.manifest["steps"]}
    for name, step in local_steps.items():   # the same records in and out of every stage, for the same reasons
        assert (steps[name]["in"], steps[name]["out"], steps[name]["dropped"]) == (step["in"], step["out"], step["dropped"])
    # near-dedupe's verification found the same pairs through the distributed steps
    for key in ("candidate_pairs", "similar_pairs", "duplicate_pairs", "clusters", "removed", "by_source"):
        assert steps["dedupe_near"]["stats"][key] == local_steps["dedupe_near"]["stats"][key], key


def test_synthetic_records_with_a_mix_match_the_local_engine(ray_runtime, tmp_path):
    """2,000 synthetic records in two sources with planted exact and near copies, down-sampled by a
    mix: dedupe, split and mix decide the same records on the cluster."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synthetic import make_alpaca

    records, _ = make_alpaca(2000, seed=3)
    inputs = []
    for i, part in enumerate((records.head(1000), records.tail(1000))):
        path = tmp_path / f"part{i}.jsonl"
        part.select("instruction", "input", "output").write_ndjson(path)
        inputs.append({"path": str(path), "source": f"s{i}", "format": "alpaca"})
    base = {"inputs": inputs, "seed": 11, "template": {"name": "alpaca"}, "decontaminate": {"enabled": False},
            "tokenize": {"tokenizer": "tiny", "max_length": 256}, "split": {"train": 0.8, "val": 0.1, "test": 0.1},
            "mix": {"proportions": {"s0": 0.75, "s1": 0.25}}}
    local = run_build(BuildConfig.model_validate({**base, "output": str(tmp_path / "local")}), show_progress=False)
    result = run_build_ray(BuildConfig.model_validate({**base, "output": str(tmp_path / "ray")}), show_progress=False)
    _assert_same_build(result.run_dir, local)
    assert result.manifest["mix"]["counts"] == local.manifest["mix"]["counts"]
    reasons = {r for s in result.manifest["sources"].values() for r in s["rejected_by_reason"]}
    assert {"exact_duplicate", "near_duplicate", "downsampled"} <= reasons


class KillOnce(Stage):
    """Passes records through, but the first batch it sees kills its own worker process (SIGKILL,
    as the OOM killer or a lost node would); the marker file makes it happen exactly once."""

    name, section = "kill_once", "clean"

    def __init__(self, marker: Path):
        self.marker = marker

    def run(self, frame: pl.DataFrame, ctx: BuildContext) -> StageResult:
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return StageResult(kept=frame)


def test_a_worker_killed_mid_build_is_retried_and_the_output_is_unchanged(ray_runtime, local_run, tmp_path):
    marker = tmp_path / "killed"
    stages = list(BUILD_STAGES)
    stages.insert(2, KillOnce(marker))   # after clean, before the dedupe shuffles
    result = run_build_ray(_config(tmp_path / "run"), base_dir=PIPELINE.parent, show_progress=False, stages=stages)
    assert marker.exists(), "the worker was never killed"
    assert int(marker.read_text()) != os.getpid()
    _assert_same_build(result.run_dir, local_run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def test_cli_build_on_a_two_node_cluster(local_run, tmp_path):
    """`ray start` a head and a second node (one CPU each, their own temp dirs) on localhost, build
    the demo with `dataforge build --engine ray --address`, and stop both nodes whatever happens."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}   # a throwaway cluster on localhost
    head_tmp, node_tmp = Path(f"/tmp/df-ray-{port}-h"), Path(f"/tmp/df-ray-{port}-w")   # short: socket paths
    nodes = []
    try:
        nodes.append(subprocess.Popen([_ray_cli(), "start", "--head", "--block", f"--port={port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                       f"--temp-dir={head_tmp}", "--include-dashboard=false", "--disable-usage-stats"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for(port)
        nodes.append(subprocess.Popen([_ray_cli(), "start", "--block", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                                       f"--temp-dir={node_tmp}", "--disable-usage-stats"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for_nodes(port, env, 2)
        out = tmp_path / "run"
        done = subprocess.run([str(Path(sys.executable).with_name("dataforge")), "build", str(PIPELINE), "-o", str(out),
                               "--engine", "ray", "--address", f"127.0.0.1:{port}", "-q"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        _assert_same_build(out, local_run)
        assert "dataset fingerprint" in done.stdout
    finally:
        for node in reversed(nodes):   # each `ray start --block` stops the processes it started
            os.killpg(node.pid, signal.SIGTERM)
        for node in nodes:
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
        for folder in (head_tmp, node_tmp):
            shutil.rmtree(folder, ignore_errors=True)


def _wait_for(port: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the Ray head did not open port {port} within {timeout} s")


def _wait_for_nodes(port: int, env: dict, n: int, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = subprocess.run([_ray_cli(), "status", f"--address=127.0.0.1:{port}"], env=env,
                                capture_output=True, text=True, timeout=60)
        if status.stdout.count("node_") >= n:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster did not reach {n} nodes within {timeout} s: {status.stdout}{status.stderr}")
