"""The command line: every setting a flag, --version, clear one-line errors, case-insensitive log
levels, `make run` leaving the environment alone, and the operator commands against a real
server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from service.__main__ import settings_from
from service.core.settings import Settings
from tests.support.cli import run, run_here

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_a_flag_and_version() -> None:
    help_text = run("--help").stdout
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text, name
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("rnn-serve 0.")
    assert "torch 2.13.0" in out.stdout


def test_a_bad_value_is_one_clear_line() -> None:
    out = run("--port", "70000")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "--port / RNN_SERVE_PORT" in line
    assert "65535" in line
    out = run(env={"RNN_SERVE_MAX_QUEUE": "lots"})
    assert out.returncode == 2
    assert "--max-queue / RNN_SERVE_MAX_QUEUE" in out.stderr
    assert "Traceback" not in out.stderr


def test_flags_win_over_the_environment_and_levels_take_any_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RNN_SERVE_MAX_QUEUE", "9")
    monkeypatch.setenv("RNN_SERVE_LOG_LEVEL", "INFO")
    assert settings_from([]).max_queue == 9
    assert settings_from([]).log_level == "info"
    assert settings_from(["--max-queue", "7", "--log-level", "Debug"]).max_queue == 7
    assert settings_from(["--inline-configs", "false"]).inline_configs is False


def test_make_run_passes_no_flags_of_its_own() -> None:
    """RNN_SERVE_PORT and RNN_SERVE_HOST must reach the server under `make run`."""
    out = subprocess.run(
        ["make", "-n", "-W", ".venv/.runtime", "run"], cwd=ROOT, capture_output=True, text=True
    )
    line = next(ln for ln in out.stdout.splitlines() if "rnn-serve" in ln)
    assert "--port" not in line
    assert "--host" not in line
    out = subprocess.run(
        ["make", "-n", "-W", ".venv/.runtime", "run", "ARGS=--port 9001"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert "--port 9001" in out.stdout


@pytest.mark.parametrize("server", ["live_server", "live_server_s3"], ids=["folder", "bucket"])
def test_operator_commands(server: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The same commands, the same answers, whichever repository the server has. Against the
    folder the command runs as an operator runs it, a process each; against the bucket its
    `main` runs in this process (the server is what differs)."""
    live_server = request.getfixturevalue(server)
    runner = run if server == "live_server" else run_here

    def models(*args: str) -> subprocess.CompletedProcess[str]:
        return runner("models", "--url", live_server, *args)

    config = '{"input_size": 3, "hidden_size": 4}'
    out = models("register", "cli-model", "--config", config)
    assert out.returncode == 0, out.stderr
    assert "registered" in out.stdout
    listed = models("list")
    assert "cli-model" in listed.stdout
    assert listed.stdout.startswith("NAME")
    torch.manual_seed(3)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(save(torch.nn.RNN(3, 4).state_dict()))
    out = models("upload", "cli-model", str(weights))
    assert out.returncode == 0, out.stderr
    assert "upload cli-model" in out.stderr  # progress
    assert out.stderr.count("100%") == 1, out.stderr  # the last line once, not twice
    exported = tmp_path / "out.safetensors"
    out = models("export", "cli-model", str(exported))
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("100%") == 1, out.stderr
    assert exported.read_bytes() == weights.read_bytes()
    assert '"hidden_size": 4' in models("show", "cli-model").stdout
    assert models("delete", "cli-model").returncode == 0
    gone = models("delete", "cli-model")
    assert gone.returncode == 1
    assert gone.stderr.strip().startswith("rnn-serve: 404:")
    assert "Traceback" not in gone.stderr
    bad = models("register", "x", "--config", "{not json")
    assert bad.returncode == 1
    assert "not JSON" in bad.stderr
    unreachable = runner("models", "--url", "http://127.0.0.1:9", "list")
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr
