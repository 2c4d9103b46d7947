"""Stage a run folder as a Hub repository (the files plus a generated card) and upload it.

The staged folder is exactly what is uploaded: `--to-folder` writes it and stops, and a push uploads
that same folder with `HfApi.upload_folder`. What goes up, per kind of folder:

    build   -> dataset repo: README.md, splits/*.parquet, manifest.json, template.json, rejects.jsonl,
               contamination.jsonl
    train   -> model repo: the adapter (or full model) files with the tokenizer and its chat template,
               template.json, README.md, training/{manifest.json, train_log.jsonl, loss_curve.png}
    export  -> model repo: the exported folder (merged model or adapter) and README.md
    eval    -> dataset repo: README.md, manifest.json, metrics.json, samples/*.jsonl
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from dataforge.errors import ConfigError, DataforgeError, InputError
from dataforge.hub import cards
from dataforge.util import atomic


class PushError(DataforgeError):
    """The Hub refused or could not be reached; the message says why and what to do."""


@dataclass
class Staged:
    kind: str          # build, train, export or eval
    repo_type: str     # dataset or model
    folder: Path
    files: list[str]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", file=str(path), line=exc.lineno) from None


def folder_kind(run: Path) -> tuple[str, dict]:
    """What `run` is, from its manifest: a build, a train run, an export or an eval results folder."""
    if (run / "export_manifest.json").is_file():
        return "export", _read(run / "export_manifest.json")
    if not (run / "manifest.json").is_file():
        raise InputError("not a dataforge build, train, export or eval folder (no manifest.json)", file=str(run))
    manifest = _read(run / "manifest.json")
    kind = manifest.get("kind")
    if kind not in ("build", "train", "eval"):
        raise InputError(f"manifest kind is {kind!r}; push takes a build, train or eval folder",
                         file=str(run / "manifest.json"), field="kind")
    if kind in ("build", "train") and not manifest.get("complete"):
        raise InputError(f"the {kind} did not finish; finish it before pushing", file=str(run / "manifest.json"))
    return kind, manifest


def read_comparison(paths: list[Path]) -> dict | None:
    """`--compare`: a `dataforge compare --json` file, or the base and tuned results folders."""
    if not paths:
        return None
    if len(paths) == 1 and paths[0].is_file():
        comp = _read(paths[0])
        if not isinstance(comp, dict) or "tasks" not in comp:
            raise InputError("not a `dataforge compare --json` file (no 'tasks')", file=str(paths[0]))
        return comp
    if len(paths) != 2:
        raise InputError("--compare takes a `dataforge compare --json` file, or two results folders: base, then tuned")
    from dataforge.eval.compare import compare_results, comparison_to_dict
    from dataforge.eval.results import load_results

    return comparison_to_dict(compare_results(load_results(paths[0]), load_results(paths[1])))


def _copy(src: Path, dest: Path, files: list[str], rel: str) -> None:
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, target)
    files.append(rel)


def _copy_tree(src: Path, dest: Path, files: list[str], prefix: str = "") -> None:
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        _copy(path, dest, files, prefix + path.relative_to(src).as_posix())


def stage(run: Path, repo_id: str, dest: Path, compare: list[Path] | None = None) -> Staged:
    """Write into `dest` (a new folder) every file the push uploads, the card included."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"--repo {repo_id!r}: {exc}") from None
    run = Path(run)
    kind, manifest = folder_kind(run)
    comp = read_comparison(compare or [])
    if comp is not None and kind not in ("train", "export"):
        raise InputError("--compare goes with an adapter or model (a train run or an export), not a "
                         f"{kind} folder", file=str(run))
    files: list[str] = []
    with atomic.atomic_path(dest, is_dir=True) as tmp:
        if kind == "build":
            for name in ("manifest.json", "template.json", "rejects.jsonl", "contamination.jsonl"):
                if (run / name).is_file():
                    _copy(run / name, tmp, files, name)
            for split, n in (manifest.get("splits") or {}).items():
                if n:
                    _copy(run / "splits" / f"{split}.parquet", tmp, files, f"splits/{split}.parquet")
            card = cards.dataset_card(manifest, repo_id)
        elif kind == "eval":
            for name in ("manifest.json", "metrics.json"):
                _copy(run / name, tmp, files, name)
            if (run / "samples").is_dir():
                _copy_tree(run / "samples", tmp, files, "samples/")
            card = cards.eval_card(manifest, _read(run / "metrics.json"), repo_id)
        elif kind == "train":
            _copy_tree(run / manifest["weights"]["path"], tmp, files)
            for name in ("manifest.json", "train_log.jsonl", "loss_curve.png"):
                if (run / name).is_file():
                    _copy(run / name, tmp, files, f"training/{name}")
            card = cards.model_card(manifest, repo_id, build=_build_manifest(manifest), comp=comp)
        else:  # export
            _copy_tree(run, tmp, files)
            card = _export_card(manifest, repo_id, comp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        files.append("README.md")
    return Staged(kind, "model" if kind in ("train", "export") else "dataset", dest, sorted(files))


def _build_manifest(train: dict) -> dict | None:
    path = Path(train["data"]["run_dir"]) / "manifest.json"
    return _read(path) if path.is_file() else None


def _export_card(export: dict, repo_id: str, comp: dict | None) -> str:
    """An export carries the train run's path: the card comes from that run's manifest when it is there."""
    run = Path(export["run"]) / "manifest.json"
    if not run.is_file():
        raise InputError(f"the export's train run manifest {run} is gone; push the train run instead",
                         file=repo_id)
    train = _read(run)
    return cards.model_card(train, repo_id, build=_build_manifest(train), comp=comp, merged=export["merged"])


def upload(staged: Staged, repo_id: str, *, private: bool, commit_message: str | None = None) -> str:
    """Create the repo if needed and upload the staged folder in one commit; returns the commit URL."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=staged.repo_type, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type=staged.repo_type, folder_path=str(staged.folder),
                                 commit_message=commit_message or f"dataforge push of a {staged.kind} folder")
    except OfflineModeIsEnabled:
        raise PushError(f"cannot push {repo_id}: HF_HUB_OFFLINE is set, so the Hub is not contacted. Unset it "
                        "to push, or write the files with --to-folder DIR") from None
    except LocalTokenNotFoundError:
        raise PushError(f"cannot push {repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN") from None
    except HfHubHTTPError as exc:
        raise PushError(f"the Hub refused the push to {repo_id}: {exc}") from None
    except (OSError, ValueError, httpx.HTTPError) as exc:  # no network, a malformed repo id (HFValidationError)
        raise PushError(f"cannot push {repo_id}: {exc}") from None
    return str(getattr(info, "commit_url", info))
