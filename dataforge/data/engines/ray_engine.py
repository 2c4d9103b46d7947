"""The Ray engine: the build's stages as Ray Data steps, on a local runtime or a cluster.

    dataforge build pipelines/build_alpaca.yaml --engine ray [--address ray://head:10001]

The same stage list (dataforge.data.stages.BUILD_STAGES) and the same pure stage functions as the
local engine, run where the data is:

* collect: one Ray task per input;
* clean, reference dedupe, decontaminate, template, tokenize (and any stage this engine has no
  special step for): `map_batches` over Arrow batches in an actor pool, so the tokenizer, the
  template and the eval and reference texts load once per actor (ray_batches.RecordStage);
* exact dedupe: records hash-partitioned by content hash, the first copy in collect order kept;
* near dedupe: signatures -> band keys (map), band buckets grouped (shuffle of 3 numbers per record
  and band), candidate pairs verified with the compared fields joined in, connected components by
  min-label propagation over the duplicate edges (joins and groupbys, a few rounds), the removed
  records broadcast back;
* split: groups counted per content hash (shuffle), sorted by their seeded draw; the driver reads the
  sorted groups once and keeps the val and test keys, the rule of split.split_records;
* mix: per-source counts aggregated, the seeded order sorted to find each source's cutoff, then a map.

Only this module (and ray_steps) import Ray; the stages do not. Records carry `_row` (their place in
the collect order) so the published splits and tokenized tables come out in the local engine's order
and with the same dataset fingerprint (see ray_publish). The engine keeps no stage cache: a rerun
with the same build key reuses the whole run, anything else recomputes.
"""

from __future__ import annotations

import time
from pathlib import Path

from dataforge.config.build import BuildConfig
from dataforge.data.engines.ray_steps import Steps, connect
from dataforge.data.engines.remote_inputs import UrlCollect, is_url, url_identity
from dataforge.data.pipeline import BuildResult, _check_run_dir, input_fingerprints
from dataforge.data.runner import FileHashes, plan
from dataforge.data.stage import BuildContext, Stage
from dataforge.data.stages import BUILD_STAGES, Collect
from dataforge.errors import DataforgeError
from dataforge.util import atomic
from dataforge.util.fingerprint import fingerprint
from dataforge.util.progress import StepProgress


class RayBuildError(DataforgeError):
    """The cluster could not finish the build (a worker died past its retries, a node was lost)."""


def run_build_ray(cfg: BuildConfig, *, overwrite: bool = False, base_dir: Path | None = None,
                  show_progress: bool = True, address: str | None = None,
                  stages: list[Stage] | None = None) -> BuildResult:
    """Build `cfg` on Ray: the cluster at `address`, the runtime this process already started, or a
    new local one. Publishes exactly what the local engine publishes (same fingerprint)."""
    import ray

    inputs = BuildContext(cfg, base_dir).resolve(cfg.inputs)
    ctx = BuildContext(cfg.model_copy(update={"inputs": inputs}), base_dir)
    hashes = FileHashes()
    local = BuildContext(ctx.cfg.model_copy(update={"inputs": [s for s in inputs if not is_url(s.path)]}), base_dir)
    inputs_fp = input_fingerprints(local, hashes) + [
        {"path": s.path, "source": s.source, "sha256": None, "identity": url_identity(s.path)}
        for s in inputs if is_url(s.path)]
    config_json = ctx.cfg.model_dump(mode="json")
    config_fp = fingerprint(config_json)
    run_dir = Path(ctx.cfg.output)
    old = _check_run_dir(run_dir, config_fp, overwrite)
    atomic.remove_stale_temps(run_dir)
    stages = [UrlCollect() if isinstance(s, Collect) else s for s in (BUILD_STAGES if stages is None else stages)]
    planned = plan(stages, ctx, hashes)
    if old is not None and old.get("build_key") == planned[-1].key and old.get("complete") and (run_dir / "splits").is_dir():
        return BuildResult(run_dir, old, reused=["all"])
    (run_dir / "manifest.json").unlink(missing_ok=True)   # from here on, the folder is not a finished build

    started = connect(address)
    progress = StepProgress("build", enabled=show_progress)
    try:
        with progress:
            steps = Steps(ctx, config_json, base_dir)
            records = None
            for p in planned:
                t0 = time.perf_counter()
                with progress.step(p.stage.name) as step:
                    records = steps.run(p.stage, records)
                    step.done(detail=f"{steps.counts[-1]['out']:,} kept")
                steps.counts[-1].update({"seconds": round(time.perf_counter() - t0, 3), "key": p.key,
                                         **({"reads": p.reads} if p.reads else {})})
            from dataforge.data.engines.ray_publish import publish

            manifest = publish(run_dir, ctx, planned, steps, records, progress,
                               {"config": config_json, "config_fingerprint": config_fp, "inputs": inputs_fp})
    except ray.exceptions.RayError as e:
        cause = _user_error(e)
        if cause is not None:
            raise cause from None
        raise RayBuildError(f"the Ray build failed and published nothing (no manifest in {run_dir}): "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    finally:
        if started:
            ray.shutdown()
    return BuildResult(run_dir, manifest, reused=[])


def _user_error(error: BaseException) -> DataforgeError | None:
    """The dataforge error (bad input, bad config) a failed Ray task raised, if that is what it was."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DataforgeError):
            return error
        error = getattr(error, "cause", None) or error.__cause__
    return None
