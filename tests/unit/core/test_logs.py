"""The access log's writer: lines as JSON or text, written in batches, none lost at a flush."""

from __future__ import annotations

import io
import json

from service.core.logs import AccessLog


def test_access_lines_as_json_and_text() -> None:
    log = AccessLog()
    stream = io.StringIO()
    log.configure("json", stream)
    for i in range(3):
        log.write({"request_id": f"r{i}", "method": "POST", "status": 200, "duration_ms": 1.5})
    log.flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert {line["logger"] for line in lines} == {"rnn_serve.access"}
    assert all(line["ts"].endswith("Z") and line["msg"] == "request" for line in lines)

    text = io.StringIO()
    log.configure("text", text)
    log.write({"request_id": "t", "status": 404})
    log.flush()
    (line,) = text.getvalue().splitlines()
    assert line.endswith("INFO rnn_serve.access request request_id=t status=404")
    log.flush()  # nothing pending: nothing written
    assert text.getvalue().count("\n") == 1


def test_lines_written_while_flushing_are_kept() -> None:
    log = AccessLog()
    seen: list[dict[str, object]] = []
    log.sink = seen.extend
    for i in range(1000):
        log.write({"n": i})
        if i % 97 == 0:
            log.flush()
    log.flush()
    assert [line["n"] for line in seen] == list(range(1000))
