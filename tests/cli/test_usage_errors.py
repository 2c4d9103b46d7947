"""Usage mistakes on the command line get click's usage message and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, message", [
    (["import-ab"], "Missing argument"),
    (["build", "--bogus"], "No such option: --bogus"),
    (["train", "--max-steps", "abc"], "Invalid value for '--max-steps'"),
    (["compare", "only-one-folder"], "Missing argument"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_exit_2_with_a_message(args, message):
    proc = subprocess.run([sys.executable, "-m", "dataforge", *args], capture_output=True, text=True)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Usage:" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
