"""User-facing failures.

Every failure a user can cause (a bad config, a bad input record, a missing file) is one of these
types. The CLI prints the message and exits with code 2; internal bugs are never caught and hidden.
"""

from __future__ import annotations


class DataforgeError(Exception):
    """Base of all user-facing errors. The message is what the user sees, so it must be complete."""

    exit_code = 2


class ConfigError(DataforgeError):
    """A config (YAML or flags) failed validation. Holds every problem at once, each with its path."""

    def __init__(self, problems: list[str] | str, where: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.where = where
        head = f"invalid config {where}" if where else "invalid config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class InputError(DataforgeError):
    """A data file or one record in it is unusable. Names the file, the line (or row) and the field."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field, self.detail = file, line, field, message
        super().__init__(format_location(file, line, field) + message)


class StateError(DataforgeError):
    """The output folder or cache is in a state we refuse to touch (another run's folder, a lock)."""


class InternalError(Exception):
    """A broken contract between two parts of dataforge (a stage got a frame without a column an
    earlier stage promised, the accounting does not add up). A bug, never the user's fault: it is
    deliberately not a DataforgeError, so the CLI shows the traceback instead of a tidy message."""


def format_location(file: str | None, line: int | None = None, field: str | None = None) -> str:
    """`file:line: field 'x': ` prefix used by every message that points at input data."""
    parts = []
    if file:
        parts.append(f"{file}:{line}" if line is not None else str(file))
    elif line is not None:
        parts.append(f"record {line}")
    loc = ": ".join(parts)
    if field:
        loc = f"{loc}: field '{field}'" if loc else f"field '{field}'"
    return f"{loc}: " if loc else ""
