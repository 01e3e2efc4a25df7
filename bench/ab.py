"""A/B: this work tree's server against another commit's, and the bare no-op, in alternation.

All three servers stay up; wrk switches between them round after round (A, B, bare, A, B, bare,
…), so a noisy neighbour hits every side alike. The figure is the median over the rounds of the
server's CPU a request (utime + stime of its every process and thread, from /proc). This is the
A/B figure a performance change is kept or dropped by.

    python -m bench.ab HEAD~1                  # seed, c=64 and c=1, 5 rounds of 4 s
    python -m bench.ab HEAD~1 --scenario 1 --c 64 --rounds 7 --seconds 3

--scenario indexes bench.run.SCENARIOS (0 seed, 1 64→128 N=1, … 5 flat JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import OUT, checkout, cpu_seconds, free_port, server, wrk
from bench.run import SCENARIOS, SHAPES, Scenario, body_for, path_for


def _ours(port: int, models: Path, pythonpath: Path | None) -> tuple[list[str], dict[str, str]]:
    env = {"RNN_SERVE_MODEL_REPOSITORY": str(models)}
    cwd_env = {"PYTHONPATH": str(pythonpath)} if pythonpath else {}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    return command, {**env, **cwd_env}


def round_cpu_us(
    url: str, pid: int, s: Scenario, body: Path, header: int | None, c: int, seconds: float
) -> tuple[float, float]:
    """One wrk run: (CPU µs a request, req/s)."""
    cpu0 = cpu_seconds(pid)
    m = wrk(url, body, c, seconds, header)
    spent = cpu_seconds(pid) - cpu0
    if m["errors"]:
        raise SystemExit(f"{url}: {m['errors']} non-2xx answers")
    return 1e6 * spent / max(1, int(m["requests"])), m["rps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ref", help="the other side: a git ref (its service/ folder)")
    parser.add_argument("--scenario", type=int, default=0)
    parser.add_argument("--c", type=int, action="append", help="concurrency (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    s = SCENARIOS[args.scenario]
    levels = args.c or [64, 1]
    work = Path(tempfile.mkdtemp(prefix="rnn-serve-ab-"))
    OUT.mkdir(exist_ok=True)
    sha, folder = checkout(args.ref, OUT)
    sides: dict[str, tuple[str, int]] = {}
    with contextlib.ExitStack() as stack:
        for name, path in (("A (this tree)", None), (f"B ({sha})", folder)):
            port = free_port()
            command, env = _ours(port, work / name[0], path)
            sides[name] = stack.enter_context(
                server(command, port, env, OUT / f"ab-{name[0]}.log", cwd=path or Path.cwd())
            )
        port = free_port()
        bare_cmd = [sys.executable, "-m", "uvicorn", "bench.baseline:app", "--host", "127.0.0.1",
                    "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                    "--log-level", "warning"]  # fmt: skip
        sides["bare"] = stack.enter_context(server(bare_cmd, port, {}, OUT / "ab-bare.log"))
        bodies: dict[str, tuple[str, Path, int | None]] = {}
        for name, (url, _) in sides.items():
            target = "bare" if name == "bare" else "rnn-serve"
            if target != "bare":
                while httpx.get(f"{url}/readyz").status_code != 200:
                    time.sleep(0.1)
                i, h, layers = SHAPES[s.model]
                config = {"input_size": i, "hidden_size": h, "num_layers": layers}
                httpx.post(
                    f"{url}/v1/models", json={"name": s.model, "config": config}, timeout=30
                ).raise_for_status()
            content, header = body_for(s, target)
            body = work / f"{name[0]}.body"
            body.write_bytes(content)
            bodies[name] = (url + path_for(s, target), body, header)
            wrk(bodies[name][0], body, levels[0], 1, header)  # warm-up
        print(f"{s.name}: A = this tree, B = {args.ref} ({sha}); {args.rounds} rounds of "
              f"{args.seconds:g} s, alternating", flush=True)  # fmt: skip
        for c in levels:
            cpu: dict[str, list[float]] = {name: [] for name in sides}
            rps: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(args.rounds):
                for name, (_, pid) in sides.items():
                    url, body, header = bodies[name]
                    us, r = round_cpu_us(url, pid, s, body, header, c, args.seconds)
                    cpu[name].append(us)
                    rps[name].append(r)
            for name in sides:
                print(f"  c={c:<3d} {name:16s} CPU µs/req median {statistics.median(cpu[name]):7.1f} "
                      f"(rounds {', '.join(f'{v:.0f}' for v in cpu[name])}); "
                      f"req/s median {statistics.median(rps[name]):.0f}", flush=True)  # fmt: skip
            a, b = (statistics.median(cpu[n]) for n in list(sides)[:2])
            print(f"  c={c:<3d} A / B = {a / b:.3f}", flush=True)


if __name__ == "__main__":
    main()
