"""The documents' code runs: every ```python and ```bash block of the README, the client's
README and the docs site's pages is run against a real server (its address put where the text
says 127.0.0.1:8000, and its gRPC address where it says 127.0.0.1:8001), so a snippet that cannot run fails CI, as LitServe tests its README. A
block runs as a reader would run it: with the shell's PATH, plus the project's venv only once the
page has said `source .venv/bin/activate`. A block that cannot run here says so in an HTML
comment on the line above it (`<!-- notest: why -->`: markdown shows nothing of it), and only
those are skipped. And the user documents hold no history: no commit hashes, issue numbers or
dated figures (those belong to CHANGELOG.md and bench/REPORT.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.M | re.S)
NOTEST = re.compile(r"<!-- notest: (\S[^\n]*?) -->\n\Z")
ACTIVATE = "source .venv/bin/activate"
VENV_BIN = ROOT / ".venv" / "bin"

DOCUMENTS = [
    ROOT / "README.md",
    ROOT / "clients" / "python" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


@dataclass(frozen=True)
class Block:
    where: str
    language: str
    code: str
    notest: str | None  # why it cannot run here
    activated: bool  # the page said `source .venv/bin/activate` before it


def blocks() -> list[Block]:
    """Every python/bash block, in order."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        activated = False
        for match in FENCE.finditer(text):
            info, code = match.group(1).strip(), match.group(2)
            language = info.split(" ", 1)[0]
            line = text.count("\n", 0, match.start()) + 1
            marker = NOTEST.search(text, 0, match.start())
            if language in ("python", "bash"):
                where = f"{path.relative_to(ROOT)}:{line}"
                found.append(Block(where, info, code, marker and marker.group(1), activated))
            activated = activated or ACTIVATE in code
    return found


BLOCKS = blocks()


def test_the_readme_has_runnable_blocks_and_says_why_others_are_not() -> None:
    runnable = [b for b in BLOCKS if b.notest is None]
    assert len(runnable) >= 10
    for block in BLOCKS:
        # the info string is the language alone: anything else breaks the docs site's fences
        assert block.language in ("python", "bash"), f"{block.where}: {block.language!r}"
    assert "notest" not in "".join(p.read_text() for p in DOCUMENTS).replace("<!-- notest: ", "")


def reader_path() -> str:
    """The shell's PATH, without the project's venv (a reader has not activated it)."""
    venv = str(VENV_BIN)
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv]
    exe = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in parts if p != exe)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.notest is None], ids=lambda b: b.where)
def test_readme_block_runs(live_servers: tuple[str, str], tmp_path: Path, block: Block) -> None:
    live_server, grpc = live_servers
    address = live_server.removeprefix("http://")
    code = block.code.replace("127.0.0.1:8000", address).replace("localhost:8000", address)
    code = code.replace("127.0.0.1:8001", grpc)
    path = reader_path()
    if block.activated:
        path = str(VENV_BIN) + os.pathsep + path
    env = {
        **os.environ,
        "PATH": path,
        "RNN_SERVE_URL": live_server,  # for `rnn-serve models ...`
    }
    env.pop("VIRTUAL_ENV", None)
    cwd = tmp_path
    if block.language == "python":
        script = tmp_path / "block.py"
        script.write_text(code)
        python = shutil.which("python", path=path) or shutil.which("python3", path=path)
        assert python is not None, f"{block.where}: no python on the reader's PATH"
        command = [python, str(script)]
    else:
        if ACTIVATE in code:
            cwd = ROOT  # (run where the reader is: in the checkout)
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{block.where} failed:\n{code}\n--- stdout\n{done.stdout}\n" \
        f"--- stderr\n{done.stderr}"  # fmt: skip


HISTORY = re.compile(
    r"\b(issues? \d+|before this (work|session)|first run|has not run yet)\b"
    r"|\(([0-9a-f]{7,40})\)|\b[0-9a-f]{7,40}\b(?= \(the same run\))",
    re.I,
)
FIGURE = re.compile(r"\b[0-9][0-9,.]* (req/s|chunks/s)\b|\b[0-9]+ ok / [0-9]+ failed")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_user_documents_hold_no_history_or_dated_figures(path: Path) -> None:
    text = path.read_text()
    assert not HISTORY.search(text), HISTORY.search(text)
    assert not FIGURE.search(text), FIGURE.search(text)
