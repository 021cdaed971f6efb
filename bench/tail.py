"""The tail at high concurrency (issue 17 item 3): what stalls the loop under the slowup load.

C concurrent misses (wrk, a unique prompt each) on a fake upstream answering after L ms,
against the minimal aiohttp proxy and one or more promptrelay variants (each a `serve`
process with its own extra settings), in rounds that alternate the targets. For every
promptrelay window it reports, beside req/s and p99 against the proxy's of the same
round: the collections of each generation and their worst pause, timed in the server
process by bench/gctrace/sitecustomize.py (bench-only, through PYTHONPATH), and the
telemetry loop-lag sampler's own worst figure (`system.loop_lag_ms` of
/api/performance, sampled every second: TELEMETRY_INTERVAL=1 for every variant).

    .venv/bin/python bench/tail.py --rounds 3 --variant after= \
        --variant "before=PYTHONPATH=<checkout of the commit before>/src" \
        --variant "thresholds=GC_TRACE_THRESHOLD=10000,50,100"

A variant is NAME=K=V;K=V (settings of its environment; PYTHONPATH is put after
bench/gctrace).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchkit import (
    BENCH_DIR,
    Service,
    WrkLoad,
    fake_upstream,
    log,
    markdown_table,
    reference_proxy,
    service_url,
    services,
)
from overhead import promptrelay_service
from suite_scale import raise_nofile, rss_mib

GEN_NAMES = ("gen0", "gen1", "gen2")


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition("=")
    env = dict(item.split("=", 1) for item in settings.split(";") if item)
    return name, env


class LagPoller:
    """Reads /api/performance every second in a thread: the worst loop lag seen."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/api/performance"
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    body = json.load(answer)
                self.samples.append(float(body["system"]["loop_lag_ms"]))
            except (OSError, KeyError, ValueError, TypeError):
                continue

    def __enter__(self) -> LagPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def _gc_window(trace: Path, t0: float, t1: float) -> dict[str, Any]:
    try:
        rows = json.loads(trace.read_text())
    except (OSError, ValueError):
        rows = []
    inside = [r for r in rows if t0 <= r[0] <= t1]
    out: dict[str, Any] = {}
    for gen, name in enumerate(GEN_NAMES):
        pauses = [r[2] for r in inside if r[1] == gen]
        cpu = [r[4] for r in inside if r[1] == gen]
        out[name] = {
            "count": len(pauses),
            "max_ms": max(pauses, default=0.0) * 1000,
            "total_ms": sum(pauses) * 1000,
            "cpu_max_ms": max(cpu, default=0.0) * 1000,
            "cpu_total_ms": sum(cpu) * 1000,
        }
    return out


def _window(load: WrkLoad, url: str, args: argparse.Namespace, server: Service) -> dict[str, Any]:
    load.run(url, args.concurrency, args.warmup, f"warm-{time.time_ns()}")
    cpu0, t0 = server.cpu_seconds(), time.time()
    result = load.run(url, args.concurrency, args.seconds, f"tail-{time.time_ns()}")
    return {
        "t0": t0,
        "t1": time.time(),
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "requests": result.requests,
        "cpu_ms": (server.cpu_seconds() - cpu0) * 1e3 / max(result.requests, 1),
        "rss_mib": rss_mib(server.pid),
        "load": os.getloadavg()[0],
    }


def _relay_window(
    load: WrkLoad, relay: Service, trace: Path, args: argparse.Namespace
) -> dict[str, Any]:
    with LagPoller(service_url(relay)) as lag:
        cell = _window(load, service_url(relay), args, relay)
    cell["gc"] = _gc_window(trace, cell["t0"], cell["t1"])
    cell["lag_max_ms"] = max(lag.samples, default=float("nan"))
    cell["lag_samples"] = lag.samples
    return cell


def _row(name: str, round_no: int, cell: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    gc = cell.get("gc")
    gcs = (
        " / ".join(f"{gc[g]['count']} ({gc[g]['cpu_max_ms']:.0f})" for g in GEN_NAMES)
        if gc
        else "—"
    )
    lag = f"{cell['lag_max_ms']:,.0f}" if "lag_max_ms" in cell else "—"
    return [
        str(round_no),
        name,
        f"{cell['rps']:,.0f}",
        f"{cell['rps'] / ref['rps']:.2f}x" if ref["rps"] else "—",
        f"{cell['p99_ms']:,.0f}",
        f"{cell['p99_ms'] / ref['p99_ms']:.2f}x" if ref["p99_ms"] else "—",
        f"{cell['cpu_ms']:.3f}",
        f"{sum(gc[g]['cpu_total_ms'] for g in GEN_NAMES) / max(cell['requests'], 1):.3f}"
        if gc
        else "—",
        gcs,
        lag,
        f"{cell['rss_mib']:.0f}",
        f"{cell['load']:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], help="NAME=K=V;K=V")
    parser.add_argument("--json")
    args = parser.parse_args()
    variants = [_variant(v) for v in args.variant] or [("promptrelay", {})]
    c = args.concurrency
    log(raise_nofile(4 * c + 256 * (1 + len(variants))))
    pool = c + 64
    fake = fake_upstream("--latency-ms", f"{args.latency_ms:g}")
    ref = reference_proxy(service_url(fake), pool=pool)
    tmp = Path(tempfile.mkdtemp(prefix="tail-"))
    relays: list[tuple[str, Service, Path]] = []
    for name, extra in variants:
        trace = tmp / f"{name}.json"
        env = {"MAX_SOCKETS": str(pool), "MAX_FREE_SOCKETS": str(pool)}
        env |= {"MAX_CONNECTIONS": str(c + 64), "TELEMETRY_INTERVAL": "1"}
        path = os.pathsep.join(
            [str(BENCH_DIR / "gctrace"), *filter(None, [extra.get("PYTHONPATH")])]
        )
        env |= {"GC_TRACE_FILE": str(trace)}
        extra = extra | {"PYTHONPATH": path}  # a variant's own source tree after the trace
        relays.append((name, promptrelay_service(service_url(fake), name, **env, **extra), trace))
    load = WrkLoad("wrk")
    rows, data = [], []
    with services([fake, ref, *(r[1] for r in relays)]):
        for round_no in range(1, args.rounds + 1):
            log(f"round {round_no}: minimal proxy")
            ref_cell = _window(load, service_url(ref), args, ref)
            rows.append(_row("minimal proxy", round_no, ref_cell, ref_cell))
            data.append({"round": round_no, "target": "proxy", **ref_cell})
            for name, relay, trace in relays:
                log(f"round {round_no}: {name}")
                cell = _relay_window(load, relay, trace, args)
                rows.append(_row(name, round_no, cell, ref_cell))
                data.append({"round": round_no, "target": name, **cell})
    header = [
        "round",
        "target",
        "req/s",
        "÷ proxy",
        "p99 ms",
        "p99 ÷ proxy",
        "CPU ms/req",
        "GC CPU ms/req",
    ]
    header += ["collections gen0 / gen1 / gen2 (worst, CPU ms)", "loop lag max ms", "RSS MiB"]
    header += ["load 1 min"]
    print(markdown_table(header, rows))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
