"""`python -m service` / `rnn-serve`: serve with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse

import uvicorn

from service.app import create_app
from service.logs import configure as configure_logging
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rnn-serve", description=__doc__)
    parser.add_argument("--host", help="bind address (RNN_SERVE_HOST)")
    parser.add_argument("--port", type=int, help="port (RNN_SERVE_PORT)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    log_config = configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        log_config=log_config,
        access_log=False,  # rnn_serve.access logs every request, with its id
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )


if __name__ == "__main__":
    main()
