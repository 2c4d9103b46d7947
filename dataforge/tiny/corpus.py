"""The general-text corpus the built-in tiny model is pretrained on: Python standard-library docstrings.

Docstrings are real English prose about a technical domain, they come with the interpreter under a
clear licence (PSF-2.0), and nobody has to download anything. They are read with `ast` from the
source files (no module is ever imported, so nothing runs), cleaned, deduplicated and split by a
content hash into train (~95 %) and held-out (~5 %). The extracted corpus is committed to the repo
(`assets/corpus/general.txt.gz`) so that a build on another Python version reads the same text.

File format of `general.txt.gz`: documents in a fixed order, each written as a form feed, the kind
of object (`module`, `class` or `function`), a space, its dotted name, a newline, the cleaned
docstring and a newline. Inside a document there is never more than one blank line and never a form
feed.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dataforge.errors import InputError
from dataforge.paths import ASSETS_DIR

CORPUS_DIR = ASSETS_DIR / "corpus"
CORPUS_FILE = CORPUS_DIR / "general.txt.gz"
HELDOUT_FILE = CORPUS_DIR / "general_heldout.txt"

KINDS = ("module", "class", "function")
HELDOUT_PERCENT = 5
MIN_CHARS = 80
DOC_SEPARATOR = "\n\n\n"  # between documents in plain-text files; never occurs inside one

# Folders of the standard library that hold tests, demos, GUIs or vendored code rather than API docs.
_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "turtledemo", "site-packages", "dist-packages", "ensurepip",
    "__pycache__", "pydoc_data",
})
_SKIP_MODULES = frozenset({"this", "antigravity", "__hello__", "__phello__", "turtle"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_HAS_DIGIT = re.compile(r"\S*\d\S*")


@dataclass(frozen=True, slots=True)
class Document:
    name: str  # dotted name of the module, class or function the docstring documents
    text: str
    kind: str = "module"  # module, class or function

    @property
    def is_heldout(self) -> bool:
        return heldout_bucket(self.text) < HELDOUT_PERCENT


def heldout_bucket(text: str) -> int:
    """0-99 bucket from the text's content, so the split never depends on order or Python version."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 100


def clean_docstring(doc: str) -> str:
    """Drop doctest sessions, control characters and blank-line runs; '' when too little prose is left.

    Doctest blocks (`>>>` lines, their `...` continuations and the expected output up to the next blank
    line) are code, not prose, and would teach the model REPL transcripts.
    """
    out: list[str] = []
    in_doctest = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_doctest = True
            continue
        if in_doctest:
            if stripped:
                continue
            in_doctest = False
        out.append(_CONTROL.sub("", line.rstrip()))
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return text if len(text) >= MIN_CHARS else ""


def near_duplicate_key(text: str) -> str:
    """Text with whitespace collapsed and number-bearing words dropped.

    Generated docstrings differ only in a number (`cp1250` vs `cp1251` codec modules); keeping one of
    each family stops near copies from landing on both sides of the train/held-out split.
    """
    return " ".join(_HAS_DIGIT.sub(" ", text).split())


def _module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for f in root.rglob("*.py"):
        rel = f.relative_to(root).parts
        if any(p in _SKIP_DIRS or p.startswith("config-") for p in rel[:-1]):
            continue
        if rel[0].removesuffix(".py") in _SKIP_MODULES:
            continue
        files.append(f)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str, str]]:
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield "module", module, doc

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                d = ast.get_docstring(child, clean=True)
                if d:
                    yield ("class" if isinstance(child, ast.ClassDef) else "function"), name, d
                if isinstance(child, ast.ClassDef):
                    yield from visit(child, name)

    yield from visit(tree, module)


def extract_stdlib_docstrings(stdlib_dir: str | Path | None = None) -> list[Document]:
    """Every usable module, class and method docstring of the standard library, in file order.

    Duplicates (the same text documented twice, e.g. in `_pyio` and `io`, or generated docstrings that
    differ only in a number) are kept once, at their first occurrence, so that a copy can never
    straddle the train/held-out split.
    """
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise InputError("standard-library folder not found", file=str(root))
    seen: set[str] = set()
    docs: list[Document] = []
    for file in _stdlib_files(root):
        module = _module_name(root, file)
        try:
            tree = ast.parse(file.read_bytes(), filename=str(file))
        except (SyntaxError, ValueError):
            continue  # a few stdlib files are deliberately invalid (bad-syntax fixtures)
        for kind, name, raw in _docstrings(tree, module):
            text = clean_docstring(raw)
            key = near_duplicate_key(text)
            if not text or key in seen:
                continue
            seen.add(key)
            docs.append(Document(name, text, kind))
    return docs


def write_corpus(docs: list[Document], path: str | Path = CORPUS_FILE) -> None:
    """Write the corpus gzip deterministically (mtime 0, no file name), so rebuilds are byte-identical."""
    from dataforge.util.atomic import write_bytes

    body = "".join(f"\f{d.kind} {d.name}\n{d.text}\n" for d in docs).encode("utf-8")
    write_bytes(path, gzip.compress(body, compresslevel=9, mtime=0))


def read_corpus(path: str | Path = CORPUS_FILE) -> list[Document]:
    path = Path(path)
    if not path.is_file():
        raise InputError("corpus file not found; run `dataforge tiny-model corpus`", file=str(path))
    try:
        body = gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"not a gzip UTF-8 corpus: {exc}", file=str(path)) from None
    docs = []
    for i, chunk in enumerate(body.split("\f")[1:], start=1):
        header, sep, text = chunk.partition("\n")
        kind, _, name = header.partition(" ")
        if kind not in KINDS or not name:
            raise InputError(f"document header {header[:80]!r} is not '<kind> <name>'", file=str(path), line=i)
        if not sep or not text.strip():
            raise InputError("document has no text", file=str(path), line=i)
        docs.append(Document(name, text.rstrip("\n"), kind))
    return docs


def split_corpus(docs: list[Document]) -> tuple[list[Document], list[Document]]:
    """(train, held-out), each in corpus order."""
    train = [d for d in docs if not d.is_heldout]
    heldout = [d for d in docs if d.is_heldout]
    return train, heldout


def write_heldout_text(heldout: list[Document], path: str | Path = HELDOUT_FILE) -> None:
    """Plain text for the eval suite: document texts joined by two blank lines."""
    from dataforge.util.atomic import write_text

    write_text(path, DOC_SEPARATOR.join(d.text for d in heldout) + "\n")


def read_heldout_documents(path: str | Path = HELDOUT_FILE) -> list[str]:
    text = Path(path).read_text(encoding="utf-8").strip("\n")
    return [t for t in text.split(DOC_SEPARATOR) if t.strip()]


def build_corpus(out_dir: str | Path = CORPUS_DIR, stdlib_dir: str | Path | None = None) -> dict:
    """Extract the corpus from this interpreter and write it with its held-out text and licence.

    Only needed to refresh the committed corpus; builds read the committed file so that they do not
    depend on the Python version they run on.
    """
    import platform

    from dataforge.util.atomic import write_text

    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    docs = extract_stdlib_docstrings(root)
    out_dir = Path(out_dir)
    write_corpus(docs, out_dir / CORPUS_FILE.name)
    train, heldout = split_corpus(docs)
    write_heldout_text(heldout, out_dir / HELDOUT_FILE.name)
    licence = root / "LICENSE.txt"
    if licence.is_file():
        write_text(out_dir / "LICENSE", licence.read_text(encoding="utf-8"))
    write_text(out_dir / "NOTICE", _NOTICE.format(version=platform.python_version(), documents=len(docs),
                                                  train=len(train), heldout=len(heldout),
                                                  percent=HELDOUT_PERCENT))
    return {"documents": len(docs), "train": len(train), "heldout": len(heldout)}


_NOTICE = """\
general.txt.gz and general_heldout.txt hold docstrings of the Python {version} standard library,
Copyright (c) 2001 Python Software Foundation; All Rights Reserved. They are redistributed under the
Python Software Foundation License Version 2 (PSF-2.0); the full licence text of that Python
release is in LICENSE in this folder.

Changes made: only module, class and function docstrings were kept, read from the source files
with `ast` (test, demo and vendored folders skipped); doctest sessions, control characters and
blank-line runs were removed; docstrings shorter than 80 characters and duplicates (also those
differing only in numbers) were dropped.

{documents} documents: {train} train and {heldout} held-out, split by a SHA-256 hash of each
document's text (held-out when the hash modulo 100 is below {percent}). general_heldout.txt holds
the held-out texts only, separated by two blank lines. Regenerate with
`dataforge tiny-model corpus`.
"""
