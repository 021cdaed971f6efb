"""MAX_FREE_SOCKETS: what closing idle upstream connections costs in reconnects.

Three promptrelay servers in front of one fake upstream (answering at once), identical
but for MAX_FREE_SOCKETS, each driven at c=16 and c=256 with unique prompts (every
request a miss, so every request is an upstream call):

    default     MAX_FREE_SOCKETS=10 (the default), MAX_SOCKETS=50 (the default)
    keep all    MAX_FREE_SOCKETS=50: no idle connection is ever closed (aiohttp's own
                behaviour, before the bound was enforced)
    keep none   MAX_FREE_SOCKETS=0: every call opens a connection; what one reconnect
                costs, as an upper bound

Reported per cell: req/s, p99, the upstream connections opened per 1,000 requests (the
fake upstream's own counter), and req/s as a ratio of "keep all" in the same run.

    .venv/bin/python bench/pool.py [--duration 5] [--warmup 2] [--load auto|wrk|aiohttp]
        [--markdown PATH] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from benchkit import (
    LoadResult,
    fake_reset,
    fake_stats,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    pick_load_generator,
    service_url,
    services,
    write_outputs,
)
from overhead import promptrelay_service

CONFIGS = {"default": "10", "keep all": "50", "keep none": "0"}
CONCURRENCY = (16, 256)


@dataclass(frozen=True, slots=True)
class Cell:
    config: str
    concurrency: int
    result: LoadResult
    connections: int  # opened at the fake upstream during the timed run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per cell")
    parser.add_argument("--load", choices=["auto", "wrk", "aiohttp"], default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    args = parser.parse_args()
    load = pick_load_generator(args.load)
    log(f"load generator: {load.name}")
    fake = fake_upstream()
    fake_url = service_url(fake)
    relays = {
        name: promptrelay_service(
            fake_url, f"promptrelay {name}", MAX_SOCKETS="50", MAX_FREE_SOCKETS=free
        )
        for name, free in CONFIGS.items()
    }
    cells: list[Cell] = []
    with services([fake, *relays.values()]):
        for concurrency in CONCURRENCY:
            for name, relay in relays.items():
                url, run = service_url(relay), uuid.uuid4().hex[:8]
                log(f"  {name}, c={concurrency}: {args.warmup:g} s warm-up, {args.duration:g} s")
                load.run(url, concurrency, args.warmup, f"warmup-{run}")
                fake_reset(fake_url)
                result = load.run(url, concurrency, args.duration, run)
                opened = int(fake_stats(fake_url)["connections_total"])
                cells.append(Cell(name, concurrency, result, opened))
    write_outputs(_report(cells, load.name), _json(cells, load.name), args.markdown, args.json)


def _report(cells: list[Cell], load: str) -> str:
    rows = []
    for cell in cells:
        base = next(
            c for c in cells if c.config == "keep all" and c.concurrency == cell.concurrency
        )
        per_k = cell.connections * 1000 / max(cell.result.requests, 1)
        ratio = cell.result.rps / base.result.rps if base.result.rps else 0.0
        rows.append(
            [
                f"{cell.config} (MAX_FREE_SOCKETS={CONFIGS[cell.config]})",
                str(cell.concurrency),
                f"{cell.result.rps:,.0f}",
                f"{cell.result.p99_ms:.2f}",
                f"{per_k:.1f}",
                f"{ratio:.2f}x",
                str(cell.result.errors),
            ]
        )
    header = ["promptrelay", "c", "req/s", "p99 ms", "connections / 1k req"]
    header += ["req/s ÷ keep all", "errors"]
    return "\n".join(
        [
            "# Upstream pool: idle connections kept (MAX_FREE_SOCKETS)",
            "",
            *(f"- {line}" for line in machine_lines(sys.argv)),
            f"- load generator: {load}; MAX_SOCKETS=50; unique prompts (every request "
            "a miss); fake upstream answering at once",
            "",
            markdown_table(header, rows),
        ]
    )


def _json(cells: list[Cell], load: str) -> dict[str, Any]:
    return {
        "machine": machine_lines(sys.argv),
        "load_generator": load,
        "cells": [
            {
                "config": c.config,
                "max_free_sockets": int(CONFIGS[c.config]),
                "concurrency": c.concurrency,
                "connections_opened": c.connections,
                "rps": c.result.rps,
                **asdict(c.result),
            }
            for c in cells
        ],
    }


if __name__ == "__main__":
    main()
