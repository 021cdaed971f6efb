"""What the server layer's limits cost: cache hits on GatewayProtocol vs uvicorn's stock
httptools protocol, same app, same settings, same run.

Three servers (promptrelay with its protocol, the same app on the stock protocol, and the
stock one again as an A/A control that shows what this machine can resolve) answer
bench/same_post.lua (one prompt: every answer after the first is a memory-cache hit, the
path where a fixed per-request cost shows most), driven by wrk in `--rounds` rounds,
each server first in turn. The servers share core 1, wrk keeps to core 0. Reported: the
median of the per-round throughput ratios and the CPU per hit each server used.

On a busy shared machine those move by tens of percent between runs, so the check is a
count noise cannot move: each protocol's server runs under callgrind (bench/callgrind.py),
and a hit costs the user-space instructions counted over `--cg-seconds` of wrk, less what
the server does idle in as long, divided by the hits the server itself counted.

    .venv/bin/python bench/server_layer.py [--duration 3] [--rounds 5] [--concurrency 16]
        [--cg-seconds 5] [--no-callgrind] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchkit import (
    BIN_DIR,
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
from callgrind import CallgrindServer, callgrind_available
from overhead import promptrelay_service

GATEWAY, STOCK, CONTROL = "GatewayProtocol", "stock httptools", "stock httptools, again"


def serve(protocol: str) -> None:
    """Child process: the promptrelay app on the given protocol (uvicorn_options otherwise)."""
    import uvicorn

    from promptrelay.app import build_app
    from promptrelay.server import uvicorn_options
    from promptrelay.settings import load_settings

    settings = load_settings()
    options = uvicorn_options(settings)
    if protocol == "stock":
        options["http"] = "httptools"
    uvicorn.run(build_app(settings, own_process=True), **options)


def server(upstream_url: str, name: str, protocol: str, **env: str) -> Service:
    service = promptrelay_service(upstream_url, name, **env)
    service.argv = [str(BIN_DIR / "python"), __file__, "--serve", protocol]
    return service


def measure(wrk: WrkLoad, servers: list[Service], args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[LoadResult]] = {s.name: [] for s in servers}
    cpu = dict.fromkeys(runs, 0.0)
    for service in servers:  # the first request stores the answer
        wrk.run(service_url(service), args.concurrency, 1, "warm", script="same_post.lua")
    for round_ in range(args.rounds):
        shift = round_ % len(servers)
        for service in servers[shift:] + servers[:shift]:
            before = service.cpu_seconds()
            result = wrk.run(
                service_url(service), args.concurrency, args.duration, "hits", "same_post.lua"
            )
            cpu[service.name] += service.cpu_seconds() - before
            runs[service.name].append(result)
            log(f"  round {round_ + 1} {service.name}: {result.rps:,.0f} hits/s")
    return {"runs": runs, "cpu": cpu}


def instructions(wrk: WrkLoad, fake_url: str, seconds: float) -> dict[str, float]:
    """Instructions per hit of each protocol, one server under callgrind at a time (two
    starting under valgrind at once took over its start-up timeout on a busy machine)."""
    counts = {}
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        for name, protocol in ((GATEWAY, "gateway"), (STOCK, "stock")):
            service = server(fake_url, name, protocol, TELEMETRY_INTERVAL="3600")
            log(f"  callgrind: starting {name} under valgrind (a minute or more)")
            with CallgrindServer(service, Path(tmp)) as counted:
                counts[name] = _per_hit(wrk, counted, seconds)
    return counts


def _per_hit(wrk: WrkLoad, server: CallgrindServer, seconds: float) -> float:
    url = service_url(server.service)
    wrk.run(url, 4, 3, "warm", script="same_post.lua")
    before = _hits_served(url)
    server.zero()
    started = time.monotonic()
    wrk.run(url, 4, seconds, "hits", script="same_post.lua")
    time.sleep(0.5)  # what is still in flight finishes inside the count
    busy, busy_seconds = server.dump(), time.monotonic() - started
    hits = _hits_served(url) - before
    server.zero()
    time.sleep(seconds)
    idle_per_second = server.dump() / seconds
    per_hit = (busy - idle_per_second * busy_seconds) / hits
    log(f"  callgrind {server.service.name}: {per_hit:,.0f} instructions/hit ({hits} hits)")
    return per_hit


def _hits_served(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/cache/stats", timeout=30) as response:
        return int(json.load(response)["savings"]["hits"])


def _median_ratio(runs: dict[str, list[LoadResult]], a: str, b: str) -> float:
    pairs = sorted(x.rps / y.rps for x, y in zip(runs[a], runs[b], strict=True) if y.rps)
    return pairs[len(pairs) // 2]


def report(
    measured: dict[str, Any], counted: dict[str, float] | None, args: argparse.Namespace
) -> tuple[str, dict[str, Any]]:
    runs, cpu = measured["runs"], measured["cpu"]
    rows, data = [], {}
    for name, results in runs.items():
        hits = sum(r.requests for r in results)
        rps = hits / sum(r.seconds for r in results)
        cpu_us = cpu[name] * 1e6 / max(1, hits)
        errors = sum(r.errors for r in results)
        rows.append([name, f"{rps:,.0f}", f"{cpu_us:.1f}", str(errors)])
        data[name] = {"hits_per_s": rps, "cpu_us_per_hit": cpu_us, "errors": errors}
    ratio = _median_ratio(runs, GATEWAY, STOCK)
    control = _median_ratio(runs, CONTROL, STOCK)
    lines = [
        "# Server layer: GatewayProtocol vs stock httptools (cache hits)",
        "",
        *machine_lines(sys.argv),
        "",
        markdown_table(["server", "hits/s", "CPU µs/hit", "errors"], rows),
        "",
        f"Median per-round throughput ratio {GATEWAY} / {STOCK}: {ratio:.3f} "
        f"(A/A control {CONTROL} / {STOCK}: {control:.3f}); "
        f"{args.rounds} rounds of {args.duration:g} s, c={args.concurrency}.",
    ]
    result: dict[str, Any] = {"servers": data, "ratio": ratio, "control": control}
    if counted is not None:
        cost = counted[GATEWAY] / counted[STOCK]
        result["instructions_per_hit"] = counted
        result["instructions_ratio"] = cost
        lines += [
            "",
            f"Instructions per hit under callgrind ({args.cg_seconds:g} s of wrk, c=4): "
            f"{GATEWAY} {counted[GATEWAY]:,.0f}, {STOCK} {counted[STOCK]:,.0f}; "
            f"ratio {cost:.3f} ({(cost - 1) * 100:+.2f}%).",
        ]
    return "\n".join(lines) + "\n", result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=["stock", "gateway"], help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cg-seconds", type=float, default=5.0, help="wrk under callgrind")
    parser.add_argument("--no-callgrind", action="store_true", help="throughput only")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    executable = shutil.which("wrk")
    if executable is None:
        sys.exit("wrk is not installed: run `sudo apt-get install wrk`")
    fake = fake_upstream()
    with services([fake]):
        servers = [
            server(service_url(fake), GATEWAY, "gateway"),
            server(service_url(fake), STOCK, "stock"),
            server(service_url(fake), CONTROL, "stock"),
        ]
        affinity = os.sched_getaffinity(0)
        pin = len(affinity) >= 2 and shutil.which("taskset") is not None
        if pin:
            os.sched_setaffinity(0, {0})
            for service in servers:
                service.argv = ["taskset", "-c", "1", *service.argv]
        try:
            with services(servers):
                measured = measure(WrkLoad(executable), servers, args)
        finally:
            if pin:
                os.sched_setaffinity(0, affinity)
        counted = None
        if not args.no_callgrind and callgrind_available():
            counted = instructions(WrkLoad(executable), service_url(fake), args.cg_seconds)
        else:
            log("callgrind skipped (--no-callgrind, or valgrind not installed)")
    text, data = report(measured, counted, args)
    write_outputs(text, data, args.markdown, args.json)


if __name__ == "__main__":
    main()
