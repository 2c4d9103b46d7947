"""Plain-text files (`.txt`): one record per non-blank line, as the `text` field.

One line per record is what `datasets.load_dataset("text", ...)` does by default, and what users
of LLaMA-Factory's and axolotl's pre-training modes bring. Blank lines separate nothing and are not
records (as in JSON lines). A line that is not valid UTF-8 is a `bad_encoding` reject of that line,
so one stray byte does not lose the file.
"""

from __future__ import annotations

from pathlib import Path

from dataforge.data.io.raw import Problem, RawInput, RawPart, RawRow

BOM = b"\xef\xbb\xbf"


def read_txt(path: Path, limit: int | None) -> RawInput:
    data = path.read_bytes()
    data = data[len(BOM):] if data.startswith(BOM) else data
    rows: list[RawRow] = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if limit is not None and len(rows) >= limit:
            break
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        try:
            rows.append(RawRow(number, {"text": line.decode("utf-8")}))
        except UnicodeDecodeError as exc:
            problem = Problem("bad_encoding", f"invalid UTF-8 byte 0x{line[exc.start]:02x} at byte {exc.start + 1} "
                                              "of the line; the file must be UTF-8")
            rows.append(RawRow(number, None, problem, line.decode("utf-8", "backslashreplace")[:2000]))
    empty = "file is empty" if not data.strip() else "holds no records"
    return RawInput(str(path), "txt", "line", [RawPart(rows=rows)] if rows else [], declared_format="text",
                    empty_message=empty)
