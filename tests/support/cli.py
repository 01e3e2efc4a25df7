"""The `rnn-serve` command, as an operator runs it (a process of its own), or its `main` in the
test's own process: the same argv, the same exit status and the same stdout and stderr, without
a Python start and a torch import per command."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from service.__main__ import main

CLI = [str(Path(sys.executable).with_name("rnn-serve"))]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`rnn-serve ARGS` in a process of its own."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def run_here(*args: str) -> subprocess.CompletedProcess[str]:
    """`rnn-serve ARGS` in this process: SystemExit read as the interpreter reads it (a message
    goes to stderr with status 1). Anything else it raises fails the test, as a traceback on
    stderr would."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess([*CLI, *args], code, out.getvalue(), err.getvalue())
