"""A real redis-server (Debian's), on a free loopback port, for the tests of sessions in Redis."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from tests.support import may_start
from tests.support.server import free_port

REDIS = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)


class RedisServer:
    """`aof`: append-only file with fsync on every write (a restart keeps every commit)."""

    def __init__(self, folder: Path, aof: bool = True) -> None:
        self.folder, self.aof = folder, aof
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisServer:
        may_start("redis-server")
        assert REDIS is not None, "redis-server is not installed (.ci/run installs it)"
        args = [
            REDIS,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.folder / "log"),
            "--enable-debug-command",  # DEBUG SLEEP: a stall for the fault tests
            "local",
        ]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args)  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(200):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start: {(self.folder / 'log').read_text()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.stop(kill=True)
        self.start()
