"""The report of a `make bench` run: bench/out/REPORT.md and its plots, rewritten from a saved
run (`--report`), published into bench/ (`--publish`), or the published plot redrawn from the
published report (`--replot`)."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys

import torch

from bench import profile
from bench.harness import (
    BENCH,
    MIN_ANSWERS_PER_CLIENT,
    OUT,
    SECONDS,
    Result,
    reliable,
)
from bench.run import (
    GPU_SCENARIOS,
    MAX_SECONDS,
    ROUNDS,
    SCENARIOS,
    SWEEP,
    TWO,
    Scenario,
    body_for,
    is_ours,
)


def _get(results: list[Result], scenario: Scenario, target: str, c: int) -> Result:
    return next(
        r
        for r in results
        if r.scenario == scenario.name and r.target == target and r.concurrency == c
    )


def floor_us(
    results: list[Result], s: Scenario, c: int, codecs: dict[str, tuple[float, float]]
) -> float:
    """The unavoidable CPU of one request at concurrency c: the bare no-op's HTTP, the codec
    in-process, and the in-process forward's share at the batch size the run formed (µs)."""
    bare = _get(results, s, "bare", c).cpu_ms * 1e3
    decode, encode = codecs[s.name]
    return bare + decode + encode + _get(results, s, "rnn-serve", c).forward_us


def write_report(
    results: list[Result],
    floors: dict[tuple[str, int, int], float],
    batched64: float,
    metrics: str,
    streaming: list[dict[str, float]],
    codecs: dict[str, tuple[float, float]],
    compared: str = "",
    handoff: float = 0.0,
    profiles: dict[str, dict[str, float]] | None = None,
    own_codecs: dict[str, tuple[float, float]] | None = None,
) -> None:
    seed, big, large_json, large_b64, large_v2, _large_flat = SCENARIOS
    profiles = profiles or {}
    top = SWEEP[-1]

    def at(s: Scenario, target: str, c: int) -> Result:
        return _get(results, s, target, c)

    def ours(s: Scenario, c: int) -> Result:
        return at(s, "rnn-serve", c)

    def bare(s: Scenario, c: int) -> Result:
        return at(s, "bare", c)

    def base(s: Scenario, c: int) -> Result:
        return at(s, "baseline", c)

    def tail(r: Result) -> float:
        return r.p99_ms / r.p50_ms if r.p50_ms else float("inf")

    def ratio(s: Scenario, c: int) -> float:
        """NaN where a round of rnn-serve or of the bare no-op answered too few requests for
        its CPU a request to mean anything (`reliable`)."""
        if not (reliable(ours(s, c)) and reliable(bare(s, c))):
            return float("nan")
        return ours(s, c).cpu_ms * 1e3 / floor_us(results, s, c, codecs)

    def p50_bound(s: Scenario) -> float:
        """c=1: bare's p50 + the in-process forward + the codec + 100 µs (ms)."""
        return bare(s, 1).p50_ms + (ours(s, 1).forward_us + sum(codecs[s.name]) + 100) / 1e3

    def worst_tail(s: Scenario) -> tuple[float, int]:
        return max((tail(ours(s, c)), c) for c in s.concurrency)

    big_floor = floors[("big", 50, 1)]
    large_floor = floors[("big", 50, 32)]
    bodies = {s.name: len(body_for(s, "rnn-serve")[0]) for s in SCENARIOS}

    def kib(s: Scenario) -> str:
        return f"{bodies[s.name] / 1024:.1f} KiB"

    short = {s.name: s.name.split(", ", 1)[0] + ", " + s.name.split(", ")[2] + ", " + s.encoding
             for s in SCENARIOS}  # fmt: skip
    checks = [
        (f"seed, c={top}: overhead ratio, rnn-serve's CPU a request / the floor", ratio(seed, top), "≤ 1.25"),
        ("seed, c=1: overhead ratio", ratio(seed, 1), "≤ 1.5"),
        *[(f"{short[s.name]}, c={top}: overhead ratio", ratio(s, top),
           "≤ 1.25" if s.encoding == "flat" else "≤ 1.2") for s in SCENARIOS if s is not seed],
        *[(f"{short[s.name]}, c=1: p50 ms against bare p50 + forward + codec + 0.1 ms "
           f"({p50_bound(s):.2f} ms)", ours(s, 1).p50_ms, f"≤ {p50_bound(s):.2f}") for s in SCENARIOS],
        *[(f"{short[s.name]}: worst p99 / p50 of rnn-serve (at c={worst_tail(s)[1]})",
           worst_tail(s)[0], "≤ 3") for s in SCENARIOS],
    ]  # fmt: skip
    more = [
        (f"seed, c={top}: rnn-serve / bare FastAPI no-op req/s (the same {kib(seed)} body)", ours(seed, top).rps / bare(seed, top).rps, ""),
        (f"64→128 N=1, c={top}: rnn-serve / bare no-op req/s (the same {kib(big)} body)", ours(big, top).rps / bare(big, top).rps, ""),
        (f"seed, c={top}: two front-ends / one, req/s", at(seed, TWO, top).rps / ours(seed, top).rps, "> 1 pays"),
        (f"seed, c={top}: rnn-serve / plain FastAPI baseline req/s", ours(seed, top).rps / base(seed, top).rps, ""),
        (f"64→128 N=1, c={top}: rnn-serve / plain FastAPI baseline req/s", ours(big, top).rps / base(big, top).rps, ""),
        ("N=32, c=1: v1 nested JSON p50 / OIP v2 binary p50", ours(large_json, 1).p50_ms / ours(large_v2, 1).p50_ms, "> 1"),
        ("N=32, c=1: OIP v2 binary p50 / in-process forward", ours(large_v2, 1).p50_ms / large_floor, "≤ 2"),
        ("N=32, c=1: base64 p50 / in-process forward", ours(large_b64, 1).p50_ms / large_floor, "≤ 2"),
    ]  # fmt: skip
    for s in GPU_SCENARIOS:
        more.append((f"{s.name}, c=256: rnn-serve / baseline req/s (the same card)",
                     ours(s, 256).rps / base(s, 256).rps, "(the GPU figure)"))  # fmt: skip

    def mark(value: float, target: str) -> str:
        if not target.startswith(("≤", ">")):
            return ""
        if math.isnan(value):
            return (f"not measured: a round answered fewer than {MIN_ANSWERS_PER_CLIENT} "
                    "requests a connection, even run again (raise BENCH_MAX_SECONDS)")  # fmt: skip
        bound = float(target.split()[1])
        met = value <= bound if target.startswith("≤") else value > bound
        return "met" if met else "not met"

    floor_rows = []
    for s in SCENARIOS:
        decode, encode = codecs[s.name]
        own = sum((own_codecs or {}).get(s.name, (float("nan"),) * 2))
        for c in s.concurrency:
            r = ours(s, c)
            floor_rows.append(
                f"| {s.name} | {c} | {bare(s, c).cpu_ms * 1e3:.0f} | {decode:.0f} | {encode:.0f} | "
                f"{own:.0f} | "
                f"{r.forward_us:.0f} ({max(s.batch, round(r.mean_batch))}) | "
                f"{floor_us(results, s, c, codecs):.0f} | {r.cpu_ms * 1e3:.0f} | {_shown(ratio(s, c))} |"
            )
    stage_rows = []
    for s in SCENARIOS:
        shares = profiles.get(s.name)
        if not shares:
            continue
        cpu = ours(s, top).cpu_ms * 1e3
        stage_rows.append(
            f"| {s.name} | {cpu:.0f} | "
            + " | ".join(f"{cpu * shares[k]:.0f} ({shares[k]:.0%})" for k in profile.STAGES)
            + " |"
        )
    lines = [
        "# rnn-serve benchmark",
        "",
        f"`make bench` on {platform.machine()} with {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; wrk (1 thread) on loopback, {SECONDS:g} s a run "
        f"(a round that answered fewer than {MIN_ANSWERS_PER_CLIENT} requests a connection runs "
        f"again, long enough at its rate, at most {MAX_SECONDS:g} s); "
        f"wrk alternates between the servers round after round, and every figure is the median "
        f"of {ROUNDS} rounds. "
        "Servers, the baseline and the load generator share the same cores, so absolute figures "
        "are modest; the ratios, all from this one run, are the point. rnn-serve runs as `make run` "
        "starts it (default settings, logging at info to a file); `rnn-serve ×2 front-ends` is the "
        "same with RNN_SERVE_FRONTENDS=2. `bare` is a FastAPI route that reads the body and returns "
        "a constant; `baseline` a plain FastAPI RNN endpoint (bench/baseline.py). CPU a request is "
        "utime + stime of the server's every process and thread over the run, per answered request.",
        "",
        "<!-- --8<-- [start:floor] -->",
        "## Targets",
        "",
        "The floor of a request is the work it cannot skip: the bare no-op's CPU a request (HTTP, "
        "measured in alternation with rnn-serve), "
        "the ideal codec in-process (orjson and NumPy, not rnn-serve's own codec) for that body "
        "and its answer, and the in-process forward's share "
        "at the batch size the run formed. The overhead ratio is rnn-serve's CPU a request over "
        "that floor.",
        "",
        "| check | measured | target | |",
        "|---|---|---|---|",
        *[f"| {name} | {_shown(value)} | {target} | {mark(value, target)} |" for name, value, target in checks],
        "",
        "| more ratios from the same run | measured | note |",
        "|---|---|---|",
        *[f"| {name} | {value:.2f} | {target} |" for name, value, target in more],
        "",
        "## The floor, and rnn-serve's CPU against it",
        "",
        "µs of CPU a request. bare: the no-op's whole request at the same concurrency; decode and "
        "encode: the ideal codec alone, in-process, for this body and an answer of its shapes "
        "(JSON: orjson.loads and np.asarray per tensor, orjson.dumps with OPT_SERIALIZE_NUMPY; "
        "base64 and OIP binary: b64decode/frombuffer and tobytes), never rnn-serve's own; "
        "rnn-serve's codec: its own decode + encode of the same, in-process, for comparison (not "
        "in the floor); forward: "
        "the in-process forward at the batch size rnn-serve formed in that run (sequences a forward "
        "in brackets), divided among the requests that shared it. A ratio is left out where a "
        f"round of rnn-serve or of the bare no-op answered fewer than {MIN_ANSWERS_PER_CLIENT} "
        "requests a connection even when run again for longer: its CPU a request then counts the "
        "unfinished requests' work too.",
        "",
        "| scenario | c | bare | decode | encode | rnn-serve's codec | forward (seqs) | floor | rnn-serve | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *floor_rows,
        "",
        "Request bodies: " + "; ".join(f"{short[x.name]} {kib(x)}" for x in SCENARIOS) + ".",
        "",
        f"One round trip from the event loop to the engine's worker thread and back, with nothing "
        f"to run, costs {handoff:.0f} µs of CPU in-process: every forward pays it once, whatever "
        "its batch.",
        "",
        f"In-process forwards, one request at a time: seed {floors[('seed', 5, 3)]:.3f} ms; 64→128 "
        f"L=50 N=1 {big_floor:.3f} ms; N=32 {large_floor:.3f} ms; N=64 {batched64:.3f} ms "
        f"({64000 / batched64:.0f} sequences/s).",
        "",
        f"## Where rnn-serve's CPU goes (py-spy, c={top})",
        "",
        "A separate run of each scenario under `py-spy record` (bench/profile.py), its samples "
        "split by stage and multiplied by the CPU a request of the measured run: µs a request "
        "(share of the samples). HTTP is uvicorn, httptools and the loop's I/O; edge the ASGI edge, "
        "routing and auth; codec the body's parse, the tensors' decode and the answer's encoding; "
        "admission the data plane (deadline, admission gate, model lookup, validation); queue "
        "hand-off the batcher, futures and the worker's wake-ups; worker the forward in the engine "
        "thread; metrics and logs the Prometheus counters, the access log and tracing.",
        "",
        "| scenario | CPU µs/req | " + " | ".join(profile.STAGES) + " |",
        "|---|---|" + "---|" * len(profile.STAGES),
        *stage_rows,
        "<!-- --8<-- [end:floor] -->",
        "",
        "![the floor against rnn-serve's CPU by stage, every scenario](overhead.png)",
        "",
        *comparison(results, compared),
        "## Streaming: sessions against the stateless equivalent",
        "",
        "32 concurrent streams of the seed model, 30 chunks of 5 steps each (base64 tensors), from "
        "a separate httpx process (`bench/streaming.py`); stateless = the client ships h0 and "
        "reads h_n on every call. Two alternating rounds each.",
        "",
        "| mode | chunks/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *[f"| {r['mode']} | {r['chunks_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |" for r in streaming],
        "",
        *capacity_section(),
        *measured_by_hand(),
        "## All runs",
        "",
        "| scenario | server | concurrency | req/s | p50 ms | p90 ms | p99 ms | CPU ms/req | seqs/forward | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r.scenario} | {r.target} | {r.concurrency} | {r.rps:.1f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_ms:.3f} | "
          + (f"{r.mean_batch:.1f}" if is_ours(r.target) else "—") + f" | {r.errors} |" for r in results],
        "",
        "![requests per second against concurrency, every scenario](throughput.png)",
        "",
        "![one payload in each wire form: nested, flat, base64, OIP binary](encodings.png)",
        "",
    ]  # fmt: skip
    (OUT / "REPORT.md").write_text("\n".join(lines))
    plot(results, floors)
    plot_overhead(results, codecs, profiles)
    print("\n".join(lines[8 : 16 + len(checks)]))
    print(f"wrote {OUT / 'REPORT.md'} and {OUT / 'throughput.png'} (make bench-publish copies "
          "them into bench/)")  # fmt: skip


def capacity_section() -> list[str]:
    """The capacity benchmark's figures (`python -m bench.capacity` writes bench/capacity.json)."""
    path = OUT / "capacity.json"
    if not path.exists():
        path = BENCH / "capacity.json"  # the published run
    if not path.exists():
        return []
    cap = json.loads(path.read_text())
    budget = cap["budget_ms"]
    return [
        "## Capacity: real-time streams within a p99 budget",
        "",
        "<!-- --8<-- [start:capacity] -->",
        f"Streams of the seed model, each sending a chunk of 10 steps every 50 ms (20 chunks/s), "
        f"open loop (latency counted from when a chunk was due), ramped until the p99 passed "
        f"{budget:g} ms; {cap['step_s']:g} s a level, the first second not counted "
        "(`python -m bench.capacity`). sessions: the server holds the state, chunks carry "
        "start_step; stateless: /v1/models/default/forward with h0 = the previous answer's h_n; "
        "-redis: sessions in Redis (redis-server on the same machine, AOF with fsync every "
        "second); grpc: each stream a sequence on Triton's ModelStreamInfer (raw FP32, "
        "sequence_id, start_step), 100 streams to an HTTP/2 connection; ws: each stream a "
        "WebSocket session, chunks in binary frames. "
        "The load generators (one process each, raw HTTP/1.1 on keep-alive connections; grpc.aio "
        "with requests serialized by hand) share the "
        f"machine's {cap.get('cpus', '?')} CPUs with the server: their own CPU and how late they "
        "sent chunks are in the table, to show whether they were the bottleneck.",
        "",
        "**" + "; ".join(
            f"{mode}: {cap[f'capacity_{mode}']} streams" for mode in
            ("sessions", "sessions-redis", "stateless", "grpc", "grpc-redis", "ws", "ws-redis")
            if f"capacity_{mode}" in cap
        ) + f"** within p99 {budget:g} ms.",
        "",
        "| mode | streams | chunks/s (target) | p50 ms | p99 ms | send lag p99 ms | errors | generator CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['mode']} | {r['streams']} | {r['chunks_per_s']:.0f} ({r['target_chunks_per_s']:.0f}) | "
          f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['send_lag_p99_ms']:.2f} | {r['errors']} | "
          f"{r['generator_cpu']:.0%} | {r['server_cpu']:.0%} |" for r in cap["rows"]],
        "<!-- --8<-- [end:capacity] -->",
        "",
    ]  # fmt: skip


def comparison(results: list[Result], compared: str) -> list[str]:
    """The report's section on the current code against the commit BENCH_COMPARE named."""
    if not compared:
        return []
    rows = []
    for old in (r for r in results if r.target == compared):
        new = next(
            r for r in results
            if (r.scenario, r.target, r.concurrency) == (old.scenario, "rnn-serve", old.concurrency)
        )  # fmt: skip
        rows.append(
            f"| {old.scenario} | {old.concurrency} | {new.rps:.1f} / {old.rps:.1f} = "
            f"{new.rps / old.rps:.2f} | {new.p99_ms:.2f} / {old.p99_ms:.2f} | "
            f"{new.cpu_ms:.3f} / {old.cpu_ms:.3f} = {new.cpu_ms / old.cpu_ms:.2f} |"
        )
    return [
        f"## Against {compared.removeprefix('rnn-serve@')} (the same run)",
        "",
        f"The server of commit `{compared.removeprefix('rnn-serve@')}` (BENCH_COMPARE), driven "
        "right after the current one with the same bodies. Ratios above 1 in req/s, and below 1 "
        "in CPU per request, mean the current code is faster.",
        "",
        "| scenario | c | req/s now / then | p99 ms now / then | CPU ms/req now / then |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def plot(results: list[Result], floors: dict[tuple[str, int, int], float]) -> None:
    """throughput.png: requests per second against concurrency, one panel a scenario, one line a
    server, with the in-process forward (one at a time) as a dashed line; encodings.png: the
    four wire forms of one payload side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(14, 9))
    axes = list(grid.flat)
    styles = {"rnn-serve": "C0", TWO: "C1", "bare": "C2", "baseline": "C3"}
    for ax, s in zip(axes, SCENARIOS, strict=False):
        targets = dict.fromkeys(r.target for r in results if r.scenario == s.name)
        for target in targets:
            runs = sorted(
                (r for r in results if r.scenario == s.name and r.target == target),
                key=lambda r: r.concurrency,
            )
            label = "bare FastAPI no-op" if target == "bare" else target
            ax.plot([r.concurrency for r in runs], [r.rps for r in runs], marker="o",
                    color=styles.get(target, "C4"), label=label)  # fmt: skip
        floor_ms = floors.get((s.model, s.seq_len, s.batch))
        if floor_ms:
            ax.axhline(1e3 / floor_ms, color="k", linestyle="--", linewidth=1,
                       label="in-process forward, one at a time")  # fmt: skip
        ax.set_title(s.name.replace(", ", "\n", 1), fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in (axes[0], axes[3]):
        ax.set_ylabel("requests / s (log)")
    fig.suptitle("rnn-serve, the bare FastAPI no-op and the FastAPI baseline: same bodies, one run")
    fig.tight_layout()
    fig.savefig(OUT / "throughput.png", dpi=110)
    plt.close(fig)

    # The encodings of one payload (64→128, L=50, N=32) side by side.
    forms = [s for s in SCENARIOS if s.model == "big" and s.batch == 32]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [s.encoding for s in forms]
    for ax, c, what in ((left, 1, "p50 ms at c=1 (lower is better)"),
                        (right, 16, "requests / s at c=16 (higher is better)")):  # fmt: skip
        values = []
        for s in forms:
            r = next((r for r in results if r.scenario == s.name and r.target == "rnn-serve"
                      and r.concurrency == c), None)  # fmt: skip
            values.append(0.0 if r is None else (r.p50_ms if c == 1 else r.rps))
        bars = ax.bar(names, values, color=["C3", "C0", "C2", "C1"][: len(names)])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_title(what, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    floor_ms = floors.get(("big", 50, 32))
    if floor_ms:
        left.axhline(floor_ms, color="k", linestyle="--", linewidth=1, label="in-process forward")
        left.legend(fontsize=8)
    fig.suptitle("64→128 ×2, L=50, N=32: one payload in each wire form (rnn-serve, one run)")
    fig.tight_layout()
    fig.savefig(OUT / "encodings.png", dpi=110)
    plt.close(fig)


def plot_overhead(
    results: list[Result],
    codecs: dict[str, tuple[float, float]],
    profiles: dict[str, dict[str, float]],
) -> None:
    """overhead.png: for every scenario at the top concurrency, the floor (bare HTTP, decode,
    encode, forward) beside rnn-serve's CPU a request split by stage (py-spy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = SWEEP[-1]
    # three panels a row, at a size whose labels read at a page's width
    rows = -(-len(SCENARIOS) // 3)
    fig, grid = plt.subplots(rows, 3, figsize=(11, 4.2 * rows + 1.2), squeeze=False)
    axes = list(grid.ravel())
    for spare in axes[len(SCENARIOS) :]:
        spare.set_visible(False)
    axes = axes[: len(SCENARIOS)]
    floor_parts = ("bare HTTP", "decode", "encode", "forward")
    floor_colors = ("#bbbbbb", "#8fbbd9", "#a6d49f", "#f4b183")
    for ax, s in zip(axes, SCENARIOS, strict=True):
        r = _get(results, s, "rnn-serve", c)
        decode, encode = codecs[s.name]
        values = (_get(results, s, "bare", c).cpu_ms * 1e3, decode, encode, r.forward_us)
        bottom = 0.0
        for value, color, label in zip(values, floor_colors, floor_parts, strict=True):
            ax.bar(0, value, 0.7, bottom=bottom, color=color, label=f"floor: {label}")
            bottom += value
        cpu, shares = r.cpu_ms * 1e3, profiles.get(s.name)
        bottom = 0.0
        for i, stage in enumerate(profile.STAGES if shares else ("all",)):
            part = cpu * shares[stage] if shares else cpu
            ax.bar(1, part, 0.7, bottom=bottom, color=f"C{i}", label=f"rnn-serve: {stage}")
            bottom += part
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["floor", "rnn-serve"], fontsize=10)
        ax.set_title(s.name.replace(", ", "\n", 2), fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[::3]:
        ax.set_ylabel(f"CPU µs a request at c={c}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    fig.suptitle("The floor of each request beside rnn-serve's CPU a request by stage (one run)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(OUT / "overhead.png", dpi=110)
    plt.close(fig)


def measured_by_hand() -> list[str]:
    """The dated figures of the benchmarks run outside this one (fairness, soak), kept in
    bench/MEASURED.md, so that every published report carries them."""
    path = BENCH / "MEASURED.md"
    return [path.read_text(), ""] if path.exists() else []


def report_again() -> None:
    """`python -m bench.run --report`: rewrite the report from the last run's saved figures."""
    out_dir = OUT
    results = [Result(**r) for r in json.loads((out_dir / "results.json").read_text())]
    saved = json.loads((out_dir / "report-inputs.json").read_text())
    floors = {(m, int(length), int(n)): float(v) for m, length, n, v in saved["floors"]}
    codecs = {k: (float(v[0]), float(v[1])) for k, v in saved["codecs"].items()}
    write_report(results, floors, saved["batched64"], saved["metrics"], saved["streaming"],
                 codecs, saved["compared"], saved.get("handoff", 0.0),
                 saved.get("profiles", {}), saved.get("own_codecs"))  # fmt: skip


def _shown(value: float) -> str:
    """A figure of the report: a dash where it was not measured (NaN, see `reliable`)."""
    return "—" if math.isnan(value) else f"{value:.2f}"


def publish() -> None:
    """`python -m bench.run --publish` (make bench-publish): the last run's report, plot and
    capacity figures become the committed ones in bench/ — on purpose, never as a side effect."""
    for name in ("REPORT.md", "throughput.png", "encodings.png", "overhead.png", "capacity.json"):
        if (OUT / name).exists():
            shutil.copyfile(OUT / name, BENCH / name)
            print(f"published bench/{name}")


def replot_published() -> None:
    """`python -m bench.run --replot`: bench/overhead.png drawn again from the figures of the
    published report's own tables (the floor and the stage split, at the top concurrency), for
    a change of the plot's layout that needs no new run."""
    global OUT
    text = (BENCH / "REPORT.md").read_text()
    c, names = SWEEP[-1], {s.name for s in SCENARIOS}
    results, codecs, profiles = [], {}, {}
    for row in text.splitlines():
        cells = [x.strip() for x in row.strip().strip("|").split("|")]
        if len(cells) in (9, 10) and cells[0] in names and cells[1] == str(c):
            bare, decode, encode = (float(x) for x in cells[2:5])
            at = len(cells) - 4  # (a report with rnn-serve's codec column has one more cell)
            forward, ours = float(cells[at].split()[0]), float(cells[at + 2])
            results += [
                Result(cells[0], "bare", c, 0, 0, 0, 0, 0, cpu_ms=bare / 1e3),
                Result(cells[0], "rnn-serve", c, 0, 0, 0, 0, 0, cpu_ms=ours / 1e3,
                       forward_us=forward),
            ]  # fmt: skip
            codecs[cells[0]] = (decode, encode)
        elif len(cells) == 2 + len(profile.STAGES) and cells[0] in names and "%)" in cells[2]:
            parts = [float(x.split()[0]) if x[:1].isdigit() else 0.0 for x in cells[2:]]
            profiles[cells[0]] = {
                k: v / sum(parts) for k, v in zip(profile.STAGES, parts, strict=True)
            }
    OUT, out = BENCH, OUT
    try:
        plot_overhead(results, codecs, profiles)
    finally:
        OUT = out
    print("wrote bench/overhead.png from bench/REPORT.md's figures")


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        report_again()
    elif sys.argv[1:] == ["--replot"]:
        replot_published()
    elif sys.argv[1:] == ["--publish"]:
        publish()
