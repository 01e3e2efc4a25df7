"""The README's code runs: every ```python and ```bash block is run against a real server (its
address put where the README says 127.0.0.1:8000), so a snippet that cannot run fails CI, as
LitServe tests its README. A block that cannot run here says so in its info string
(```bash notest: why), and only those are skipped."""

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


def blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every python/bash block, in order."""
    found = []
    text = (ROOT / "README.md").read_text()
    for match in FENCE.finditer(text):
        info, code = match.group(1).strip(), match.group(2)
        language = info.split(" ", 1)[0]
        line = text.count("\n", 0, match.start()) + 1
        if language in ("python", "bash"):
            found.append((f"README.md:{line}", info, code))
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


def test_figures_the_readme_quotes_come_from_the_report() -> None:
    """Every `N req/s` and `N streams` in the README is in the committed bench/REPORT.md (req/s
    rounded as the README rounds them)."""
    readme = (ROOT / "README.md").read_text()
    report = (ROOT / "bench" / "REPORT.md").read_text()
    cells = [float(v) for v in re.findall(r"\| ([0-9]+\.[0-9]) \|", report)]
    quoted = [float(v.replace(",", "")) for v in re.findall(r"([0-9][0-9,.]*) req/s", readme)]
    assert len(quoted) >= 4
    for value in quoted:
        assert any(abs(value - cell) <= 0.5 for cell in cells), (
            f"{value} req/s is not in the report"
        )
    streams = re.findall(r"(sessions|stateless): ([0-9]+)\s+streams", readme)
    assert streams
    for mode, count in streams:
        assert f"{mode}: {count} streams" in report, (mode, count)
