"""Why the upstream client is aiohttp: the same minimal proxy on aiohttp and on httpx.

bench/reference_proxy.py is started twice as separate processes, once with
`aiohttp.ClientSession` and once with `httpx.AsyncClient` (same pool size, same ASGI
app), both in front of the fake Anthropic API answering instantly, and both are driven
with the same unique-prompt load in one run:

    .venv/bin/python bench/client_choice.py [--duration 5] [--concurrency 16]

httpx is not a promptrelay dependency; install it into the venv for this bench only
(`.venv/bin/pip install httpx`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
import uuid
from dataclasses import asdict
from typing import Any

from benchkit import (
    LoadResult,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    pick_load_generator,
    reference_proxy,
    service_url,
    services,
    write_outputs,
)

CLIENTS = ("aiohttp", "httpx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    parser.add_argument(
        "--concurrency",
        type=lambda s: sorted({int(x) for x in s.split(",")}),
        default=[16],
        help="comma list, default 16",
    )
    parser.add_argument("--load", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    args = parser.parse_args()
    if importlib.util.find_spec("httpx") is None:
        sys.exit(
            "httpx is not installed. It is needed by this benchmark only (not by promptrelay):\n"
            f"    {sys.executable} -m pip install httpx"
        )
    load = pick_load_generator(args.load)
    log(f"load generator: {load.name}")

    fake = fake_upstream()
    proxies = {client: reference_proxy(service_url(fake), client) for client in CLIENTS}
    results: list[tuple[str, int, LoadResult, float]] = []
    with services([fake, *proxies.values()]):
        for concurrency in args.concurrency:
            for client, proxy in proxies.items():
                url, run_id = service_url(proxy), uuid.uuid4().hex[:8]
                log(f"  {client}, c={concurrency}: warm-up {args.warmup} s, then {args.duration} s")
                load.run(url, concurrency, args.warmup, f"warmup-{run_id}")
                cpu0 = proxy.cpu_seconds()
                result = load.run(url, concurrency, args.duration, run_id)
                cpu_ms = (proxy.cpu_seconds() - cpu0) * 1e3 / max(result.requests, 1)
                results.append((client, concurrency, result, cpu_ms))

    versions = {c: importlib.metadata.version(c) for c in CLIENTS}
    rows = []
    for client, concurrency, result, cpu_ms in results:
        base = next(r for c, n, r, _ in results if c == "aiohttp" and n == concurrency)
        rows.append(
            [
                f"{client} {versions[client]}",
                str(concurrency),
                f"{result.rps:,.0f}",
                f"{result.p50_ms:.2f}",
                f"{result.p99_ms:.2f}",
                f"{cpu_ms:.3f}",
                f"{result.rps / base.rps:.2f}x" if base.rps else "—",
                str(result.errors),
            ]
        )
    header = ["upstream client", "c", "req/s", "p50 ms", "p99 ms", "proxy CPU ms/req"]
    header += ["req/s ÷ aiohttp", "errors"]
    report = "\n".join(
        [
            "# Upstream client: aiohttp vs httpx in the same minimal proxy",
            "",
            *(f"- {line}" for line in machine_lines(sys.argv)),
            f"- load generator: {load.name}",
            f"- {args.duration:g} s per cell after a {args.warmup:g} s warm-up; fake upstream "
            "answering instantly; proxy: bench/reference_proxy.py --client <name>, "
            "pool of 100 connections",
            "",
            markdown_table(header, rows),
        ]
    )
    data: dict[str, Any] = {
        "machine": machine_lines(sys.argv),
        "load_generator": load.name,
        "versions": versions,
        "cells": [
            {"client": c, "concurrency": n, "rps": r.rps, "cpu_ms_per_request": cpu, **asdict(r)}
            for c, n, r, cpu in results
        ],
    }
    write_outputs(report, data, args.markdown, args.json)


if __name__ == "__main__":
    main()
