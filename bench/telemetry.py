"""What telemetry costs: cache-hit throughput with TELEMETRY_ENABLED=true vs false.

Starts the fake Anthropic API and two `promptrelay serve` processes pointed at it, one
with telemetry on (listeners, sampler every TELEMETRY_INTERVAL s, Prometheus) and one
with it off, then drives both with wrk posting the same prompt (bench/same_post.lua:
after the first request every answer is a memory-cache hit, the path where a fixed
per-request cost shows most). The targets alternate for `--rounds` rounds so drifts in
the machine's load hit both; the result is the median of the paired (on, off) ratios.
Both servers are pinned to core 1 and wrk to core 0 (taskset), and because two server
processes on a shared 2-core machine can still differ by more than 5% from run to run
with the same settings, the report also times the listener itself in-process: the cost
telemetry adds to every hit, free of that noise.

    .venv/bin/python bench/telemetry.py [--duration 3] [--rounds 7] [--concurrency 16]
        [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import timeit
from typing import Any

from benchkit import (
    LoadResult,
    Service,
    WrkLoad,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    service_url,
    services,
    write_outputs,
)
from overhead import promptrelay_service

ON, OFF = "telemetry on", "telemetry off"


def promptrelay(upstream_url: str, telemetry: bool) -> Service:
    name = ON if telemetry else OFF
    return promptrelay_service(upstream_url, name, TELEMETRY_ENABLED=str(telemetry).lower())


def wrk_hits(wrk: WrkLoad, url: str, concurrency: int, seconds: float) -> LoadResult:
    return wrk.run(url, concurrency, seconds, "hits", script="same_post.lua")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=7, help="on/off pairs, alternating")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    executable = shutil.which("wrk")
    if executable is None:
        sys.exit("wrk is not installed: run `sudo apt-get install wrk`")
    wrk = WrkLoad(executable)

    fake = fake_upstream()
    fake_url = service_url(fake)
    on, off = promptrelay(fake_url, True), promptrelay(fake_url, False)
    if len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset"):
        # Both servers share core 1; this process, wrk and the fake keep to core 0. Without
        # it, two identical servers differed by 5-15% from run to run on this machine.
        os.sched_setaffinity(0, {0})
        for server in (on, off):
            server.argv = ["taskset", "-c", "1", *server.argv]
    runs: dict[str, list[LoadResult]] = {ON: [], OFF: []}
    cpu: dict[str, float] = {ON: 0.0, OFF: 0.0}  # CPU seconds of the server in timed runs
    with services([fake, on, off]):
        for service in (on, off):  # warm-up: the first request stores the answer
            wrk_hits(wrk, service_url(service), args.concurrency, 1)
        for round_ in range(args.rounds):
            order = (on, off) if round_ % 2 == 0 else (off, on)
            for service in order:
                before = service.cpu_seconds()
                result = wrk_hits(wrk, service_url(service), args.concurrency, args.duration)
                cpu[service.name] += service.cpu_seconds() - before
                log(f"  round {round_ + 1} {service.name}: {result.rps:,.0f} req/s")
                runs[service.name].append(result)
    text, data = report(runs, cpu, args)
    write_outputs(text, data, args.markdown, args.json)


def listener_cost_us(number: int = 200_000) -> float:
    """CPU the stats listener spends on one cache hit (its CacheLookup and RequestFinished),
    measured in this process: steadier than any throughput ratio on a shared machine."""
    from promptrelay.core.events import CacheLookup, RequestFinished
    from promptrelay.telemetry.stats import RequestStats

    stats = RequestStats()
    lookup = CacheLookup(True, "claude_response", 900.0, 30, "claude-sonnet-4-6", 10, 20)
    finished = RequestFinished("/v1/messages", 200, "HIT", 0.0012, 0.0011, 0.0, 120, 400, False)

    def hit() -> None:
        stats(lookup)
        stats(finished)

    return timeit.timeit(hit, number=number) / number * 1e6


def _rps(results: list[LoadResult]) -> float:
    seconds = sum(r.seconds for r in results)
    return sum(r.requests for r in results) / seconds if seconds else 0.0


def report(
    runs: dict[str, list[LoadResult]], cpu: dict[str, float], args: argparse.Namespace
) -> tuple[str, Any]:
    rows = []
    cpu_us = {
        name: cpu[name] * 1e6 / max(1, sum(r.requests for r in results))
        for name, results in runs.items()
    }
    for name, results in runs.items():
        rows.append(
            [
                name,
                ", ".join(f"{r.rps:,.0f}" for r in results),
                f"{_rps(results):,.0f}",
                f"{sorted(r.p50_ms for r in results)[len(results) // 2]:.2f}",
                f"{max(r.p99_ms for r in results):.2f}",
                f"{cpu_us[name]:.1f}",
                str(sum(r.errors for r in results)),
            ]
        )
    overall = _rps(runs[ON]) / _rps(runs[OFF]) if _rps(runs[OFF]) else float("nan")
    # Each round runs on and off back to back: the median of those paired ratios shrugs
    # off a round that another job on the machine slowed down.
    pairs = sorted(a.rps / b.rps for a, b in zip(runs[ON], runs[OFF], strict=True) if b.rps)
    ratio = pairs[len(pairs) // 2] if pairs else float("nan")
    listener_us = listener_cost_us()
    header = [
        "target",
        "req/s per run",
        "req/s overall",
        "median p50 ms",
        "worst p99 ms",
        "server CPU µs/req",
        "errors",
    ]
    lines = [
        "# Telemetry overhead on cache hits (TELEMETRY_ENABLED=true vs false)",
        "",
        *(f"- {line}" for line in machine_lines(sys.argv)),
        f"- wrk, 1 thread, c={args.concurrency}, bench/same_post.lua (one prompt: all memory "
        f"hits after the first); {args.rounds} alternating rounds of {args.duration:g} s",
        "",
        markdown_table(header, rows),
        "",
        f"- throughput with telemetry on / off, median of the {len(pairs)} paired rounds: "
        f"**{ratio:.3f}** ({(1 - ratio) * 100:+.1f}% cost; negative means on was faster: "
        f"noise); all rounds summed: {overall:.3f}",
        f"- the telemetry listener alone, in-process (timeit, one hit's two events): "
        f"{listener_us:.2f} µs, {listener_us / cpu_us[OFF] * 100:.1f}% of a hit's server CPU "
        "with telemetry off",
        f"- server CPU per request on / off: {cpu_us[ON]:.1f} / {cpu_us[OFF]:.1f} µs "
        f"({cpu_us[ON] - cpu_us[OFF]:+.1f} µs per request for telemetry)",
        "- the machine is shared (2 cores, other jobs running): differences of a few percent "
        "between runs are within its noise; rerun for a distribution.",
    ]
    data = {
        "machine": machine_lines(sys.argv),
        "ratio_on_off": ratio,
        "ratio_all_rounds": overall,
        "listener_us_per_hit": listener_us,
        "cost_pct": (1 - ratio) * 100,  # what bench/suite.py checks against < 5%
        "cpu_us_per_request": cpu_us,
        "runs": {k: [r.__dict__ | {"rps": r.rps} for r in v] for k, v in runs.items()},
    }
    return "\n".join(lines), data


if __name__ == "__main__":
    main()
