"""Logging: JSON lines (one object per record) or plain text, at the configured level.

Every request logs a line, so logging is on the hot path. Records are handed to a queue
(`QueueHandler`); one background thread formats and writes them (`QueueListener`), so the event
loop never formats or waits on a write. The record itself is kept cheap: no caller lookup
(`logging._srcfile`), no thread/process names, which rnn-serve's lines do not carry.
"""

from __future__ import annotations

import atexit
import logging
import logging.config
import logging.handlers
import queue
import sys
import time
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
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
