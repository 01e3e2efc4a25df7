"""Logging: JSON lines (one object per record) or plain text, at the configured level.

Records are handed to a queue (`QueueHandler`); one background thread formats and writes them
(`QueueListener`), so the event loop never formats or waits on a write. Records are kept cheap:
no caller lookup (`logging._srcfile`), no thread/process names, which rnn-serve's lines do not
carry.

The access log — one line per request, so on the hot path — skips `logging`'s machinery
(a LogRecord, handlers, a formatter walking the record's attributes: ~15 µs a request): the
request's fields go into a list, and a writer thread formats them in batches (one orjson call
a line) and writes each batch at once. Its lines look like every other line of the log, under
the logger name `rnn_serve.access`, and follow that logger's level.
"""

from __future__ import annotations

import atexit
import logging
import logging.config
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came in `extra` and goes into the line.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of msg
}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _Enqueue(logging.handlers.QueueHandler):
    """Queues the record as it is: formatting (and the message's % args) is the listener's job.
    Exception info is rendered to text here, while the traceback still exists."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        return record


def _timestamp(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created * 1000) % 1000:03d}Z"
    )


class AccessLog:
    """The access log's lines: buffered on the event loop, formatted and written by a thread."""

    NAME = "rnn_serve.access"

    def __init__(self) -> None:
        self._logger = logging.getLogger(self.NAME)
        self._pending: list[tuple[float, dict[str, Any]]] = []
        self._wake = threading.Event()
        self._flushing = threading.Lock()
        self._json = True
        self.stream: Any = sys.stderr
        #: where formatted lines go; tests may replace it (called from the writer thread)
        self.sink: Callable[[list[dict[str, Any]]], None] | None = None
        self._thread: threading.Thread | None = None

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        """Queue one request's line (a cheap append; the writer thread does the rest)."""
        self._pending.append((time.time(), fields))
        if self._thread is None:
            self._start()
        elif len(self._pending) >= 512:
            self._wake.set()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rnn-access-log", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            self._wake.wait(0.05)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._flushing:  # one flush at a time: batches are written in the order taken
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        lines = [
            {"ts": _timestamp(created), "level": "info", "logger": self.NAME, "msg": "request",
             **fields}
            for created, fields in pending
        ]  # fmt: skip
        if self.sink is not None:
            self.sink(lines)
            return
        if self._json:
            text = b"".join(orjson.dumps(line, default=str) + b"\n" for line in lines).decode()
        else:
            text = "".join(
                f"{line['ts']} INFO {self.NAME} request "
                + " ".join(f"{k}={v}" for k, v in line.items() if k not in _LINE_KEYS)
                + "\n"
                for line in lines
            )
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed at exit: nothing more to say
            pass

    def configure(self, fmt: str, stream: Any) -> None:
        self._json = fmt == "json"
        self.stream = stream


_LINE_KEYS = {"ts", "level", "logger", "msg"}
ACCESS = AccessLog()

_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # writes what is still queued
        _listener = None


def configure(level: str, fmt: str) -> dict[str, Any]:
    """Set up the root logger behind a queue; returns the config, which uvicorn takes as its
    log_config."""
    global _listener
    _stop_listener()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup per record
    formatter: logging.Formatter = (
        JSONFormatter() if fmt == "json" else
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )  # fmt: skip
    ACCESS.configure(fmt, sys.stderr)
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    atexit.register(_stop_listener)
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"default": {"()": _Enqueue, "queue": records}},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            # rnn_serve.access logs every request, with its id; uvicorn's own line is redundant
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }
    logging.config.dictConfig(config)
    return config
