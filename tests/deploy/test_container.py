"""What can be checked of the container files without a Docker engine."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_copies_only_existing_paths() -> None:
    copies = [args for op, args in _instructions() if op == "COPY" and "--from" not in args]
    assert copies
    for args in copies:
        *sources, _ = args.split()
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    ops = _instructions()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = [args for op, args in ops if op == "CMD"][-1]
    assert cmd == '["rnn-serve"]'
    assert "rnn-serve" in scripts
    users = [args for op, args in ops if op == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    assert any(op == "HEALTHCHECK" and "/readyz" in args for op, args in ops)
    assert any(op == "RUN" and "torch==2.13.0" in args for op, args in ops)
