"""Spreadsheet cells that round-trip: the escaping `export-ab` writes and the build's `ab` format reads back."""

from __future__ import annotations

# Cells a spreadsheet would run as a formula; a leading quote is escaped too, so unescaping is exact.
_ESCAPE_START = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_cell(value: str) -> str:
    """The cell with a `'` in front when a spreadsheet would read it as a formula (or it starts with `'`)."""
    return "'" + value if value.startswith(_ESCAPE_START) else value


def unescape_cell(value: str) -> str:
    """The inverse of escape_cell: unescape_cell(escape_cell(x)) == x for every string x."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_ESCAPE_START) else value


def normalize_rating(cell: str) -> str:
    """A rater's `preference` cell as a rating word: case and spaces do not matter (`Both bad` is
    `both_bad`). `import-ab` and the preference build's `ab` format read ratings through it, so they
    agree on every word."""
    return cell.strip().lower().replace(" ", "_")
