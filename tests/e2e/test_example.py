"""The README's train -> upload -> serve example runs against the real server."""

from __future__ import annotations

import pytest

from examples.train_and_serve import main

pytestmark = pytest.mark.e2e


def test_train_upload_serve(live_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", live_server, "--seconds", "1", "--name", "sine-test"]) == 0
    assert "OK: rnn-serve serves exactly the trained model" in capsys.readouterr().out


def test_grpc_streams_example(
    live_servers: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.grpc_streams import main as streams

    url, target = live_servers
    assert streams(["--grpc", target, "--url", url, "--sequences", "6"]) == 0
    assert "OK: every sequence is what torch computes" in capsys.readouterr().out


def test_char_lstm_example(live_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.char_lstm import main as char_lstm

    args = ["--url", live_server, "--steps", "20", "--sample", "20", "--name", "char-test"]
    assert char_lstm(args) == 0
    out = capsys.readouterr().out
    assert "OK: rnn-serve serves the trained model exactly, stateless and streamed" in out
    assert "sampled: Alice was beginning" in out


def test_keyword_spotter_example(live_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.keyword_spotter import main as spotter

    assert spotter(["--url", live_server, "--steps", "10", "--name", "kws-test"]) == 0
    assert "OK: rnn-serve serves the trained model exactly" in capsys.readouterr().out


def test_websocket_stream_example(live_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.ws_stream import main as ws_stream

    assert ws_stream(["--url", live_server]) == 0
    assert "exactly torch's output" in capsys.readouterr().out
