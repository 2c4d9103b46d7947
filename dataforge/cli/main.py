"""The `dataforge` command: a thin shell over the Python API.

Each command lives in its own module with a `register(app)` function. User-facing failures
(`DataforgeError`) become one clear message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from dataforge.errors import DataforgeError

COMMAND_MODULES = (
    "dataforge.cli.build",
    "dataforge.cli.inspect",
    "dataforge.cli.tiny_model",
    "dataforge.cli.train",
    "dataforge.cli.self_instruct",
    "dataforge.cli.evaluate",
    "dataforge.cli.compare",
    "dataforge.cli.quickstart",
    "dataforge.cli.push",
)

app = typer.Typer(
    name="dataforge",
    help="Build instruction-tuning datasets, tune with LoRA/QLoRA, and check what the tune did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
# Newer typer vendors its own click, older typer uses click itself: take the class typer raises.
USAGE_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_all()


_OS_HINTS = {
    errno.EACCES: "check the permissions of the file or folder",
    errno.EPERM: "check the permissions of the file or folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "this is a folder, not a file",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
}


def os_error_message(exc: OSError) -> str:
    """`PATH: Permission denied (check the permissions ...)`: the path and what to do, no traceback."""
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    hint = _OS_HINTS.get(exc.errno)
    return f"cannot access {where}: {exc.strerror or exc}" + (f" ({hint})" if hint else "")


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code here instead of raising
        if isinstance(code, int) and code:
            sys.exit(code)
    except DataforgeError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # the file system refused: an unreadable input, an unwritable -o
        if exc.filename is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(os_error_message(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except USAGE_ERRORS as exc:  # a missing argument, an unknown option, a bad value: usage and exit 2
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
