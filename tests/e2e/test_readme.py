"""The documents' code runs: every ```python and ```bash block of the README and of the docs
site's pages is run against a real server (its address put where the text says 127.0.0.1:8000),
so a snippet that cannot run fails CI, as LitServe tests its README. A block that cannot run here
says so in its info string (```bash notest: why), and only those are skipped. And the user
documents hold no history: no commit hashes, issue numbers or dated figures (those belong to
CHANGELOG.md and bench/REPORT.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.M | re.S)


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every python/bash block, in order."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            info, code = match.group(1).strip(), match.group(2)
            language = info.split(" ", 1)[0]
            line = text.count("\n", 0, match.start()) + 1
            if language in ("python", "bash"):
                found.append((f"{path.relative_to(ROOT)}:{line}", info, code))
    return found


BLOCKS = blocks()


def test_the_readme_has_runnable_blocks_and_says_why_others_are_not() -> None:
    runnable = [b for b in BLOCKS if "notest" not in b[1]]
    assert len(runnable) >= 10
    for where, info, _ in BLOCKS:
        if "notest" in info:
            assert re.search(r"notest: \S", info), f"{where}: say why it cannot run"


@pytest.mark.parametrize(
    ("where", "info", "code"), [b for b in BLOCKS if "notest" not in b[1]], ids=lambda v: v
)
def test_readme_block_runs(
    live_server: str, tmp_path: Path, where: str, info: str, code: str
) -> None:
    address = live_server.removeprefix("http://")
    code = code.replace("127.0.0.1:8000", address).replace("localhost:8000", address)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "RNN_SERVE_URL": live_server,  # for `rnn-serve models ...`
    }
    if info.startswith("python"):
        script = tmp_path / "block.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{where} failed:\n{code}\n--- stdout\n{done.stdout}\n" \
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
