"""Inputs in object storage (`s3://`, `gs://`, `file://`, anything fsspec opens) for the Ray engine.

Every worker that reads an input fetches it itself into its own temporary folder, so the driver
never copies data and the nodes of a cluster need no shared disk; the URL must be reachable from
each node (a process-local `memory://` is not). A record's `origin_file` is the URL. The build key
covers an object's identity as its store reports it: the sha256 of a local file, the store's
checksum (an S3 or GCS ETag / CRC) otherwise, so a changed object is read again.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from dataforge.data.stage import BuildContext
from dataforge.data.stages import Collect
from dataforge.errors import InputError


def is_url(path: str) -> bool:
    return "://" in path


def url_identity(url: str) -> str:
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    from dataforge.util.fingerprint import sha256_file

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise InputError("object does not exist (or is not readable from this machine)", file=url)
    if isinstance(fs, LocalFileSystem):
        return sha256_file(path)
    return f"{type(fs).__name__}:{fs.checksum(path)}"


def fetch(url: str, folder: Path) -> Path:
    """Copy the object at `url` into `folder`, streaming (its name kept, so its format is recognised)."""
    import fsspec

    target = folder / PurePosixPath(url.split("://", 1)[1]).name
    try:
        with fsspec.open(url, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (FileNotFoundError, OSError) as e:
        raise InputError(f"cannot read the object: {e}", file=url) from None
    return target


class UrlCollect(Collect):
    """The collect stage with URL inputs: their identity joins the key; only local files are hashed."""

    def settings(self, ctx: BuildContext) -> dict:
        remote = {s.path: url_identity(s.path) for s in ctx.resolve(ctx.cfg.inputs) if is_url(s.path)}
        return {**super().settings(ctx), **({"remote": remote} if remote else {})}

    def reads(self, ctx: BuildContext) -> list[Path]:
        return ctx.local_files([s for s in ctx.cfg.inputs if not is_url(s.path)])
