"""The built-in model's folder on disk: written whole or not at all, and checkable afterwards.

`SHA256SUMS` (the `sha256sum` format, so `sha256sum -c SHA256SUMS` works too) covers every other
file, and `build_info.json` records how the weights were made. `dataforge tiny-model info` and the
tests verify the sums, so a weight file damaged in a checkout or by a bad merge is caught before
anyone trusts an eval of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dataforge.errors import InputError
from dataforge.util.atomic import atomic_path
from dataforge.util.fingerprint import sha256_file

CHECKSUMS = "SHA256SUMS"
BUILD_INFO = "build_info.json"


def write_model_folder(model: Any, tokenizer: Any, build_info: dict, out_dir: str | Path) -> Path:
    """save_pretrained model and tokenizer, build_info.json and SHA256SUMS, swapped into place atomically."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp / "tokenizer_config.json")
        (tmp / BUILD_INFO).write_text(json.dumps(build_info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        sums = [f"{sha256_file(f)}  {f.name}" for f in sorted(tmp.iterdir()) if f.is_file()]
        (tmp / CHECKSUMS).write_text("\n".join(sums) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes the folder private
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
    return out_dir


def _portable_tokenizer_class(config_path: Path) -> None:
    """Name the tokenizer class every transformers release knows.

    transformers 5 writes its own `TokenizersBackend`, which 4.x cannot load; both load a
    tokenizer.json-backed `PreTrainedTokenizerFast` to the same thing.
    """
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_checksums(folder: str | Path) -> dict[str, str]:
    path = Path(folder) / CHECKSUMS
    if not path.is_file():
        raise InputError(f"no {CHECKSUMS} in the model folder", file=str(folder))
    sums = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise InputError("expected '<sha256>  <file name>'", file=str(path), line=n)
        sums[name] = digest
    return sums


def verify_checksums(folder: str | Path) -> list[str]:
    """One line per problem (a changed, missing or unlisted file); empty when the folder is intact."""
    folder = Path(folder)
    sums = read_checksums(folder)
    problems = []
    for name, digest in sorted(sums.items()):
        f = folder / name
        if not f.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(f) != digest:
            problems.append(f"{name}: checksum differs")
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != CHECKSUMS and f.name not in sums:
            problems.append(f"{f.name}: not listed in {CHECKSUMS}")
    return problems


def read_build_info(folder: str | Path) -> dict:
    path = Path(folder) / BUILD_INFO
    if not path.is_file():
        raise InputError(f"no {BUILD_INFO}; was this folder written by `dataforge tiny-model build`?", file=str(folder))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=str(path), line=exc.lineno) from None
