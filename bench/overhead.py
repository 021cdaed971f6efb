"""What promptrelay's miss path costs: direct vs a minimal proxy vs promptrelay, one run.

Starts three processes on free loopback ports: the fake Anthropic API (answering
instantly), the reference pass-through proxy (bench/reference_proxy.py, aiohttp client)
and `promptrelay serve` pointed at the fake. Then drives the same load, every request a
different prompt (so every promptrelay request is a cache miss that goes upstream), at
each concurrency against each target, warming each up first. The machine is shared and
noisy, so the figures that matter are the ratios within one run:

    .venv/bin/python bench/overhead.py [--duration 5] [--json PATH] [--markdown PATH]
        [--profile]   # then sample promptrelay with py-spy in an extra, untimed window

Columns: req/s, p50/p99 latency, CPU time of the proxy process per answered request
(psutil, measured over the timed window only), the fake upstream's CPU per request,
the p50 difference against going direct, and req/s as a ratio of the reference proxy's.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from benchkit import (
    API_KEY,
    BIN_DIR,
    LoadGenerator,
    LoadResult,
    Service,
    fake_reset,
    fake_stats,
    fake_upstream,
    free_port,
    log,
    machine_lines,
    markdown_table,
    pick_load_generator,
    reference_proxy,
    service_url,
    services,
    write_outputs,
)
from profiling import Profile, py_spy, record
from profiling import report as profile_report

DIRECT, REFERENCE, PROMPTRELAY = "direct to fake", "reference proxy", "promptrelay"


@dataclass(frozen=True)
class Cell:
    target: str
    concurrency: int
    result: LoadResult
    proxy_cpu_ms: float | None  # per answered request; None when there is no proxy
    fake_cpu_ms: float
    upstream_calls: int


def promptrelay_service(upstream_url: str, name: str = "promptrelay", **env_extra: str) -> Service:
    """`promptrelay serve` on a free port, memory tier only; `env_extra` adds settings.

    A stage that raises MAX_SOCKETS raises MAX_FREE_SOCKETS with it (the defaults'
    proportion, 10 of 50, never below 10), unless it sets that too: it measures the
    larger pool, not reconnects (bench/pool.py measures those)."""
    if "MAX_SOCKETS" in env_extra and "MAX_FREE_SOCKETS" not in env_extra:
        sockets = int(env_extra["MAX_SOCKETS"])
        env_extra["MAX_FREE_SOCKETS"] = str(min(sockets, max(10, sockets // 5)))
    port = free_port()
    env = dict(os.environ)
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=upstream_url,
        REDIS_ENABLED="false",
        LOG_LEVEL="warning",
        **env_extra,
    )
    env.pop("PROMPTRELAY_API_KEYS", None)
    argv = [str(BIN_DIR / "promptrelay"), "serve"]
    return Service(name, argv, f"http://127.0.0.1:{port}/api/health", env)


def measure(
    load: LoadGenerator,
    target: str,
    url: str,
    proxy: Service | None,
    fake: Service,
    concurrency: int,
    args: argparse.Namespace,
) -> Cell:
    run_id = uuid.uuid4().hex[:8]
    log(f"  {target}, c={concurrency}: warm-up {args.warmup} s, then {args.duration} s")
    load.run(url, concurrency, args.warmup, f"warmup-{run_id}-c{concurrency}")
    fake_url = service_url(fake)
    fake_reset(fake_url)
    proxy_cpu0 = proxy.cpu_seconds() if proxy else 0.0
    fake_cpu0 = fake.cpu_seconds()
    result = load.run(url, concurrency, args.duration, f"{run_id}-c{concurrency}")
    fake_cpu = fake.cpu_seconds() - fake_cpu0
    proxy_cpu = proxy.cpu_seconds() - proxy_cpu0 if proxy else None
    calls = int(fake_stats(fake_url)["requests"])
    per_request = max(result.requests, 1)
    return Cell(
        target=target,
        concurrency=concurrency,
        result=result,
        proxy_cpu_ms=None if proxy_cpu is None else proxy_cpu * 1e3 / per_request,
        fake_cpu_ms=fake_cpu * 1e3 / per_request,
        upstream_calls=calls,
    )


def _find(cells: list[Cell], target: str, concurrency: int) -> Cell:
    return next(c for c in cells if c.target == target and c.concurrency == concurrency)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def report(cells: list[Cell], load: LoadGenerator, args: argparse.Namespace) -> str:
    header = [
        "target",
        "c",
        "req/s",
        "p50 ms",
        "p99 ms",
        "proxy CPU ms/req",
        "fake CPU ms/req",
        "Δp50 vs direct",
        "req/s ÷ reference",
        "errors",
    ]
    rows = []
    for cell in cells:
        direct = _find(cells, DIRECT, cell.concurrency).result
        reference = _find(cells, REFERENCE, cell.concurrency).result
        r = cell.result
        rows.append(
            [
                cell.target,
                str(cell.concurrency),
                f"{r.rps:,.0f}",
                _fmt(r.p50_ms),
                _fmt(r.p99_ms),
                _fmt(cell.proxy_cpu_ms, 3),
                _fmt(cell.fake_cpu_ms, 3),
                f"{r.p50_ms - direct.p50_ms:+.2f} ms",
                f"{r.rps / reference.rps:.2f}x" if reference.rps else "—",
                str(r.errors),
            ]
        )
    lines = [
        "# promptrelay miss overhead vs direct and vs a minimal proxy",
        "",
        *(f"- {line}" for line in machine_lines(sys.argv)),
        f"- load generator: {load.name}",
        f"- {args.duration:g} s per cell after a {args.warmup:g} s warm-up; fake upstream "
        "answering instantly; every request a different prompt (all misses)",
        "",
        markdown_table(header, rows),
        "",
        *summary(cells, args.concurrency),
    ]
    return "\n".join(lines)


def summary(cells: list[Cell], concurrencies: list[int]) -> list[str]:
    lines = []
    low, high = min(concurrencies), max(concurrencies)
    direct, ref, relay = (_find(cells, t, low).result for t in (DIRECT, REFERENCE, PROMPTRELAY))
    lines.append(
        f"- c={low}: promptrelay adds {relay.p50_ms - direct.p50_ms:+.2f} ms p50 over going "
        f"direct; the reference proxy adds {ref.p50_ms - direct.p50_ms:+.2f} ms, so "
        f"promptrelay's own share is {relay.p50_ms - ref.p50_ms:+.2f} ms."
    )
    ref_cell, relay_cell = _find(cells, REFERENCE, high), _find(cells, PROMPTRELAY, high)
    ratio = relay_cell.result.rps / ref_cell.result.rps if ref_cell.result.rps else math.nan
    lines.append(
        f"- c={high}: promptrelay serves {ratio:.2f}x the reference proxy's req/s "
        f"({relay_cell.result.rps:,.0f} vs {ref_cell.result.rps:,.0f}); CPU per request "
        f"{_fmt(relay_cell.proxy_cpu_ms, 3)} ms vs {_fmt(ref_cell.proxy_cpu_ms, 3)} ms."
    )
    for cell in cells:
        if cell.target == PROMPTRELAY and cell.upstream_calls < cell.result.requests:
            lines.append(
                f"- WARNING c={cell.concurrency}: {cell.result.requests} answers but only "
                f"{cell.upstream_calls} upstream calls: some requests were not misses."
            )
    if any(cell.result.errors for cell in cells):
        lines.append("- WARNING: some requests failed (see the errors column).")
    relay_calls = sum(c.upstream_calls for c in cells if c.target == PROMPTRELAY)
    relay_answers = sum(c.result.requests for c in cells if c.target == PROMPTRELAY)
    lines.append(
        f"- Check: promptrelay answered {relay_answers:,} timed requests and made "
        f"{relay_calls:,} upstream calls (calls ≥ answers: every one was a miss; the "
        "few extra are requests still in flight when the timer stopped)."
    )
    lines.append(
        "- On 2 cores the load generator, the fake and the proxy compete for CPU, so absolute "
        "req/s understate what a proxy does alone; compare ratios within this run."
    )
    return lines


def to_json(cells: list[Cell], load: LoadGenerator, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "machine": machine_lines(sys.argv),
        "load_generator": load.name,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "cells": [{**asdict(c), "rps": c.result.rps} for c in cells],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--concurrency",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[1, 16],
        help="comma list, default 1,16",
    )
    parser.add_argument("--load", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the timed cells, sample promptrelay with py-spy under the highest load",
    )
    args = parser.parse_args()
    spy = py_spy()
    if args.profile and spy is None:
        sys.exit("--profile needs py-spy, from the bench extra: pip install -e .[bench]")
    load = pick_load_generator(args.load)
    log(f"load generator: {load.name}")

    fake = fake_upstream()
    fake_url = service_url(fake)
    ref = reference_proxy(fake_url)
    relay = promptrelay_service(fake_url)
    cells: list[Cell] = []
    with services([fake, ref, relay]):
        targets: list[tuple[str, str, Service | None]] = [
            (DIRECT, fake_url, None),
            (REFERENCE, service_url(ref), ref),
            (PROMPTRELAY, service_url(relay), relay),
        ]
        for concurrency in args.concurrency:
            for target, url, proxy in targets:
                cells.append(measure(load, target, url, proxy, fake, concurrency, args))
        profile = None
        if args.profile and spy is not None:
            profile = profile_promptrelay(spy, load, relay, max(args.concurrency), args)
    text, data = report(cells, load, args), to_json(cells, load, args)
    if profile is not None:
        text += "\n\n" + profile_section(profile, max(args.concurrency), args)
        data["profile_top_own"] = profile.own.most_common(10)
    write_outputs(text, data, args.markdown, args.json)


def profile_promptrelay(
    spy: str, load: LoadGenerator, relay: Service, concurrency: int, args: argparse.Namespace
) -> Profile:
    seconds = max(1, round(args.duration))
    log(f"  profiling promptrelay (py-spy, {seconds} s) at c={concurrency}")
    tag = f"profile-{uuid.uuid4().hex[:8]}"

    def drive() -> LoadResult:
        return load.run(service_url(relay), concurrency, seconds + 1, tag)

    return record(spy, relay.pid, seconds, drive)


def profile_section(profile: Profile, concurrency: int, args: argparse.Namespace) -> str:
    return (
        f"## Where promptrelay's CPU goes on a miss (py-spy, c={concurrency}, "
        f"{max(1, round(args.duration))} s, untimed window)\n\n" + profile_report(profile)
    )


if __name__ == "__main__":
    main()
