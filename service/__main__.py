"""`python -m service` / `rnn-serve`: serve with uvicorn (uvloop + httptools).

Every setting is a flag (`--max-queue 4096`) and an environment variable (RNN_SERVE_MAX_QUEUE);
a flag wins over the variable, which wins over `.env`. `rnn-serve models ...` runs the operator
commands against a running server (service.ops).

With one front-end, this process serves HTTP and runs the engine. With several, this process
runs the engine (catalog, batcher, worker thread, sessions) on a thread of its own, serves it
on a Unix socket, and uvicorn's supervisor runs the front-end processes on the shared listening
socket, restarting any that dies; SIGTERM drains the front-ends, then stops the engine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from importlib import metadata

from pydantic import ValidationError
from pydantic_settings import CliSettingsSource

from service import __version__
from service.core.settings import Settings, frontends_for


def version() -> str:
    def of(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"rnn-serve {__version__} (torch {of('torch')}, fastapi {of('fastapi')})"


def settings_from(argv: list[str]) -> Settings:
    """Settings from flags, environment and .env; a bad value exits with one line per field."""
    parser = argparse.ArgumentParser(
        prog="rnn-serve",
        description="Serve PyTorch RNNs over HTTP (v1 and the Open Inference Protocol).",
        epilog="Every flag is also an environment variable: --max-queue is RNN_SERVE_MAX_QUEUE. "
        "Operator commands against a running server: rnn-serve models --help.",
    )
    parser.add_argument("--version", action="version", version=version())
    source: CliSettingsSource[Settings] = CliSettingsSource(
        Settings, root_parser=parser, cli_kebab_case=True, cli_prog_name="rnn-serve"
    )
    try:
        return Settings(_cli_settings_source=source(args=argv))
    except ValidationError as exc:
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"])
            flag = "--" + name.replace("_", "-")
            env = "RNN_SERVE_" + name.split(".")[0].upper()
            print(
                f"rnn-serve: invalid setting {flag} / {env}: {error['msg']} "
                f"(got {error.get('input')!r})",
                file=sys.stderr,
            )
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["models"]:
        from service.ops import main as operator_main

        raise SystemExit(operator_main(argv[1:]))
    settings = settings_from(argv)
    warn_if_open(settings)
    frontends = frontends_for(settings)
    if frontends > 1:
        serve_with_frontends(settings, frontends)
    else:
        serve_in_one_process(settings)


def warn_if_open(settings: Settings) -> None:
    """No API key and an address others can reach: say so, loudly."""
    import ipaddress
    import logging

    from service.dataplane.keys import Keys

    if Keys(settings).enabled:
        return
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        logging.basicConfig()
        logging.getLogger("rnn_serve").warning(
            "!!! rnn-serve listens on %s with NO API KEYS: anyone who can reach it may run "
            "models, upload weights over them and delete them. Set RNN_SERVE_ADMIN_KEYS / "
            "RNN_SERVE_INFERENCE_KEYS or RNN_SERVE_API_KEYS_FILE (see the README). !!!",
            settings.host,
        )


def _uvicorn_options(settings: Settings) -> dict[str, object]:
    from service.http.protocol import TimedHttpToolsProtocol

    TimedHttpToolsProtocol.configure(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": TimedHttpToolsProtocol,  # httptools, with read deadlines and a connection cap
        "log_level": settings.log_level,
        "access_log": False,  # rnn_serve.access logs every request, with its id
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_s),
        # WebSocket streams: a frame within the body limit; a few frames queued, then not read
        "ws_max_size": settings.max_body_bytes,
        "ws_max_queue": settings.stream_max_in_flight,
        # tensors compress poorly: permessage-deflate would spend CPU on every frame for little
        "ws_per_message_deflate": False,
    }


def serve_in_one_process(settings: Settings) -> None:
    import uvicorn

    from service.app import create_app
    from service.core.logs import configure as configure_logging

    log_config = configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(create_app(settings), log_config=log_config, **_uvicorn_options(settings))  # type: ignore[arg-type]


def serve_with_frontends(settings: Settings, frontends: int) -> None:
    run_dir = tempfile.mkdtemp(prefix="rnn-serve-")
    metrics_dir = os.path.join(run_dir, "metrics")
    os.mkdir(metrics_dir)
    socket_path = os.path.join(run_dir, "engine.sock")
    # Before prometheus-client is first imported, here and (inherited) in every front-end.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["RNN_SERVE_ENGINE_SOCKET"] = socket_path
    import uvicorn

    from service.core.logs import configure as configure_logging
    from service.runtime.process import EngineThread

    configure_logging(settings.log_level, settings.log_format)
    engine = EngineThread(settings, socket_path)
    engine.start()
    try:
        uvicorn.run(
            "service.app:frontend",
            factory=True,
            workers=frontends,
            log_config=None,  # each front-end configures its own (service.app.frontend)
            **_uvicorn_options(settings),  # type: ignore[arg-type]
        )
    finally:
        engine.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
