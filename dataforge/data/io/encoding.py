"""Which Unicode encoding a text file is in, so a UTF-16 export reads as text instead of failing on
every line as "invalid JSON at column 1".

A byte-order mark says it outright. Without one, JSON and CSV text starts with an ASCII character,
and the zero bytes around it give away UTF-16 and UTF-32 and their byte order (the method of RFC 4627,
section 3). The bytes are then re-encoded as UTF-8, the one encoding the readers parse, so every
reader and both of its routes see the same text. 8-bit encodings (latin-1, cp1252) cannot be told
from UTF-8 this way and are not guessed: their bytes are rejected record by record as bad_encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)


@dataclass(frozen=True)
class Decoded:
    """A file's text as UTF-8 bytes. `encoding` is what it was stored in (`utf-8-sig`: UTF-8 with a
    byte-order mark); `error` says why it could not be decoded, and `data` is then empty."""

    data: bytes
    encoding: str
    error: str | None = None


def detect(head: bytes) -> tuple[str, int, str]:
    """(encoding, length of its byte-order mark, how it was recognised) from a file's first bytes."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom), "byte-order mark"
    if len(head) >= 4 and all(head[:4]):
        return "utf-8", 0, ""
    if len(head) >= 4:
        zeros = tuple(b == 0 for b in head[:4])
        by_zeros = {(True, True, True, False): "utf-32-be", (False, True, True, True): "utf-32-le",
                    (True, False, True, False): "utf-16-be", (False, True, False, True): "utf-16-le"}
        if zeros in by_zeros:
            return by_zeros[zeros], 0, "zero bytes"
    return "utf-8", 0, ""


def to_utf8(data: bytes) -> Decoded:
    """The file's bytes as UTF-8 (unchanged when they already are, so the fast route pays nothing).

    UTF-8 itself is not validated here: invalid bytes stay put for the readers to reject per record.
    A UTF-16 or UTF-32 file that does not decode is refused whole: its records cannot be located.
    """
    encoding, skip, how = detect(data[:4])
    if encoding == "utf-8":
        return Decoded(data, encoding)
    if encoding == "utf-8-sig":
        return Decoded(data[skip:], encoding)
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        return Decoded(b"", encoding, f"the file is {encoding.upper()} (from its {how}) but is not valid "
                                      f"{encoding.upper()} at byte {exc.start + skip} ({exc.reason}); none of its "
                                      f"{len(data):,} bytes were read")
    return Decoded(text.encode("utf-8"), encoding)
