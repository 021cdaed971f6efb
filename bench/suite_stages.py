"""The stages of the benchmark suite (bench/suite.py), one function each.

Each stage starts the processes it needs on free loopback ports (fake upstream,
promptrelay, reference proxy, redis-server), measures a baseline and the thing itself in
the same invocation, stops every process by PID, and returns a `StageResult` whose checks
are issue 7's targets. Throughput comes from wrk; the Python client (cache.py's, or
promptrelay's own `loadgen`) is used only where the figure is a latency, a count or a
hit rate, never a req/s target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

import suite_scale
from benchkit import (
    API_KEY,
    BENCH_DIR,
    LoadResult,
    Service,
    WrkLoad,
    fake_reset,
    fake_stats,
    fake_upstream,
    free_port,
    log,
    reference_proxy,
    service_url,
    services,
)
from cache import fake_service, relay_service, run_prompts, zipf_prompts
from overhead import DIRECT, PROMPTRELAY, REFERENCE, Cell, measure, promptrelay_service
from promptrelay.devtools.loadgen import LoadPlan, Workload, run_bench
from promptrelay.settings import Settings
from suite_report import Chart, Check, StageResult, at_least, at_most

MIB = 1024 * 1024
HIT_SCRIPT = "pool_post.lua"  # with args "1 0": one prompt, so all hits after the first


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes of one run: full (`make bench`) or --quick (a functional check only)."""

    quick: bool
    duration: float  # seconds of each timed wrk window
    warmup: float  # seconds of wrk before each timed window
    memory_requests: int
    zipf_requests: int
    hit_miss_prompts: int
    # streams stage (bench/suite_scale.py): C streams of N deltas M ms apart, new ones
    # started for `stream_seconds`
    stream_concurrency: int = 500
    stream_deltas: int = 200
    stream_interval_ms: float = 25.0
    stream_seconds: float = 20.0
    # slowup stage: C concurrent misses on an upstream answering after `slow_latency_ms`
    slow_concurrency: int = 1024
    slow_latency_ms: float = 200.0
    slow_warmup: float = 3.0
    slow_seconds: float = 8.0

    @classmethod
    def make(cls, quick: bool, **overrides: Any) -> SuiteConfig:
        """The full or quick sizes; `overrides` (the command line's) replace fields."""
        if quick:
            small = dict(stream_concurrency=50, stream_deltas=40, stream_seconds=2.0)
            small |= dict(slow_concurrency=128, slow_warmup=1.0, slow_seconds=2.0)
            return cls(True, 1, 1, 10_000, 2_000, 20, **(small | overrides))
        return cls(False, 5, 1, 100_000, 10_000, 50, **overrides)


def _calls(fake: Service) -> int:
    return int(fake_stats(service_url(fake)).get("by_path", {}).get("/v1/messages", 0))


def _wrk_hits(load: WrkLoad, url: str, concurrency: int, seconds: float, tag: str) -> LoadResult:
    return load.run(url, concurrency, seconds, tag, script=HIT_SCRIPT, script_args=("1", "0"))


def _row(label: str, result: LoadResult, extra: list[str]) -> list[str]:
    return [
        label,
        f"{result.rps:,.0f}",
        f"{result.p50_ms:.2f}",
        f"{result.p99_ms:.2f}",
        *extra,
        str(result.errors),
    ]


# --- overhead: direct vs minimal proxy vs promptrelay, misses ------------------------------


def overhead_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    fake = fake_upstream()
    fake_url = service_url(fake)
    ref, relay = reference_proxy(fake_url), promptrelay_service(fake_url)
    args = argparse.Namespace(warmup=cfg.warmup, duration=cfg.duration)
    cells: list[Cell] = []
    with services([fake, ref, relay]):
        targets: list[tuple[str, str, Service | None]] = [
            (DIRECT, fake_url, None),
            (REFERENCE, service_url(ref), ref),
            (PROMPTRELAY, service_url(relay), relay),
        ]
        for concurrency in (1, 16):
            for target, url, proxy in targets:
                cells.append(measure(load, target, url, proxy, fake, concurrency, args))

    def cell(target: str, c: int) -> Cell:
        return next(x for x in cells if x.target == target and x.concurrency == c)

    rows = []
    for x in cells:
        direct, ref_cell = cell(DIRECT, x.concurrency), cell(REFERENCE, x.concurrency)
        ratio = x.result.rps / ref_cell.result.rps if ref_cell.result.rps else math.nan
        cpu = "—" if x.proxy_cpu_ms is None else f"{x.proxy_cpu_ms:.3f}"
        extra = [
            f"{x.result.p50_ms - direct.result.p50_ms:+.2f}",
            f"{ratio:.2f}x",
            cpu,
            f"{x.upstream_calls:,}",
        ]
        rows.append(_row(f"{x.target}, c={x.concurrency}", x.result, extra))
    ref16, relay16 = cell(REFERENCE, 16).result, cell(PROMPTRELAY, 16).result
    ratio16 = relay16.rps / ref16.rps if ref16.rps else math.nan
    added_c1 = cell(PROMPTRELAY, 1).result.p50_ms - cell(DIRECT, 1).result.p50_ms
    cpu_relay, cpu_ref = cell(PROMPTRELAY, 16).proxy_cpu_ms, cell(REFERENCE, 16).proxy_cpu_ms
    checks = [
        at_least("misses c=16: req/s ÷ minimal aiohttp proxy ≥ 0.80", ratio16, 0.80, "x"),
        at_most("misses c=1: p50 added over direct ≤ 1 ms", added_c1, 1.0, " ms"),
    ]
    charts = [
        Chart(
            f"misses, c={c}",
            "req/s (wrk)",
            [(x.target, x.result.rps) for x in cells if x.concurrency == c],
            line=0.8 * ref16.rps if c == 16 else None,
            line_label="target: 0.8 x reference",
        )
        for c in (1, 16)
    ]
    charts.append(
        Chart(
            "CPU per request, c=16",
            "ms of the proxy process",
            [(REFERENCE, cpu_ref or math.nan), (PROMPTRELAY, cpu_relay or math.nan)],
        )
    )
    return StageResult(
        name="overhead",
        title="Miss overhead: direct vs minimal aiohttp proxy vs promptrelay",
        notes=[
            "fake upstream answering instantly; every request a different prompt (all misses)",
            f"wrk, {cfg.warmup:g} s warm-up then {cfg.duration:g} s per cell; baseline: the "
            "minimal pass-through proxy (bench/reference_proxy.py) and going direct, same run",
            "CPU: user+system seconds of the proxy process over the timed window, per answer",
        ],
        header=[
            *("target", "req/s", "p50 ms", "p99 ms", "Δp50 vs direct ms", "÷ reference"),
            *("proxy CPU ms/req", "upstream calls", "errors"),
        ],
        rows=rows,
        checks=checks,
        data={
            "cells": [{**asdict(x), "rps": x.result.rps} for x in cells],
            "ratio_vs_reference_c16": ratio16,
            "p50_added_c1_ms": added_c1,
        },
        charts=charts,
    )


# --- cache: hits vs misses, Zipf hit rate -------------------------------------------------


def cache_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    run_id = uuid.uuid4().hex[:8]
    slow_fake, fast_fake = fake_service(1000), fake_service(0)
    slow_relay = relay_service(service_url(slow_fake))
    fast_relay = relay_service(service_url(fast_fake))
    with services([slow_fake, fast_fake, slow_relay, fast_relay]):
        fast_url = service_url(fast_relay)
        log("  cache: misses then hits at c=16 (wrk), instant upstream")
        load.run(fast_url, 16, cfg.warmup, f"warm-miss-{run_id}")
        misses = load.run(fast_url, 16, cfg.duration, f"miss-{run_id}")
        _wrk_hits(load, fast_url, 16, cfg.warmup, f"hit-{run_id}")
        fake_reset(service_url(fast_fake))
        hits = _wrk_hits(load, fast_url, 16, cfg.duration, f"hit-{run_id}")
        hit_window_calls = _calls(fast_fake)

        log(f"  cache: {cfg.hit_miss_prompts} prompts twice against a 1 s upstream, c=10")
        prompts = [f"suite unique {run_id} n{n}" for n in range(cfg.hit_miss_prompts)]
        slow_url = service_url(slow_relay)
        slow_miss = run_prompts("misses, 1 s upstream", slow_url, prompts, 10)
        slow_hit = run_prompts("hits, same prompts", slow_url, prompts, 10)

        zipf = zipf_prompts(200, cfg.zipf_requests, 1.1, 1, run_id)
        log(f"  cache: Zipf {len(zipf):,} requests over 200 prompts, c=16")
        fake_reset(service_url(fast_fake))
        zipf_batch = run_prompts("zipf", fast_url, zipf, 16)
        zipf_calls = _calls(fast_fake)

    faster = (1 - slow_hit.p50_ms / slow_miss.p50_ms) * 100 if slow_miss.p50_ms else math.nan
    hit_ratio = hits.rps / misses.rps if misses.rps else math.nan
    rows = [
        _row("misses c=16 (wrk)", misses, ["—", "—"]),
        _row("hits c=16 (wrk, one prompt)", hits, [f"{hit_ratio:.2f}x", str(hit_window_calls)]),
    ]
    for batch in (slow_miss, slow_hit, zipf_batch):
        tags = ", ".join(f"{k} {v:,}" for k, v in sorted(batch.x_cache.items()))
        rows.append(
            [
                f"{batch.label} ({batch.requests:,} req, c={batch.concurrency}, Python client)",
                f"{batch.rps:,.0f}",
                f"{batch.p50_ms:.2f}",
                f"{batch.p99_ms:.2f}",
                "—",
                tags,
                str(batch.errors),
            ]
        )
    checks = [
        at_least("hits, one worker, c=16: ≥ 8,000 req/s", hits.rps, 8000, " req/s", 0),
        at_most("hits, one worker, c=16: p50 ≤ 2 ms", hits.p50_ms, 2.0, " ms"),
        at_least("hits ÷ misses throughput, c=16 ≥ 2x (specification)", hit_ratio, 2.0, "x"),
        at_least("upstream 1 s: hits faster than misses at p50 ≥ 99%", faster, 99.0, "%"),
        at_least(
            f"Zipf {len(zipf):,} requests over 200 prompts: hit rate ≥ 97%",
            zipf_batch.hit_rate * 100,
            97.0,
            "%",
        ),
    ]
    if hit_window_calls:
        checks.append(
            Check("hit window: no upstream calls", str(hit_window_calls), False, "not all hits")
        )
    return StageResult(
        name="cache",
        title="Cache: hits vs misses, and the Zipf hit rate",
        notes=[
            "promptrelay with the memory tier only (REDIS_ENABLED=false)",
            f"throughput rows: wrk, {cfg.warmup:g} s warm-up then {cfg.duration:g} s; baseline "
            "for hits: misses through the same promptrelay, same run",
            "1 s upstream and Zipf rows: closed-loop Python client (bench/cache.py), used for "
            "latency and hit rate only; x-cache counted per answer",
            f"Zipf: weight 1/rank^1.1, seed 1; upstream /v1/messages calls: {zipf_calls}",
        ],
        header=[
            *("run", "req/s", "p50 ms", "p99 ms", "÷ misses", "x-cache / upstream calls"),
            "errors",
        ],
        rows=rows,
        checks=checks,
        data={
            "wrk_misses_c16": asdict(misses) | {"rps": misses.rps},
            "wrk_hits_c16": asdict(hits) | {"rps": hits.rps},
            "hit_window_upstream_calls": hit_window_calls,
            "hits_over_misses_rps": hit_ratio,
            "slow_misses": asdict(slow_miss) | {"rps": slow_miss.rps},
            "slow_hits": asdict(slow_hit) | {"rps": slow_hit.rps},
            "hits_faster_pct": faster,
            "zipf": asdict(zipf_batch) | {"hit_rate": zipf_batch.hit_rate, "rps": zipf_batch.rps},
            "zipf_upstream_calls": zipf_calls,
        },
        charts=[
            Chart(
                "c=16, instant upstream",
                "req/s (wrk)",
                [("misses", misses.rps), ("hits", hits.rps)],
                line=8000,
                line_label="hit target 8,000",
            ),
            Chart(
                "upstream 1 s: p50",
                "ms (log)",
                [("misses", slow_miss.p50_ms), ("hits", slow_hit.p50_ms)],
                log_scale=True,
            ),
            Chart(
                "Zipf hit rate",
                "%",
                [("hit rate", zipf_batch.hit_rate * 100)],
                line=97,
                line_label="target 97%",
            ),
        ],
    )


# --- burst: 100 identical concurrent misses -----------------------------------------------


def burst_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    latency_ms = 500
    fake = fake_service(latency_ms)
    relay = relay_service(service_url(fake))
    with services([fake, relay]):
        results = {}
        calls = {}
        for name, url, key in (
            ("direct to fake", service_url(fake), API_KEY),
            ("promptrelay", service_url(relay), None),
        ):
            fake_reset(service_url(fake))
            plan = LoadPlan(
                url=url,
                api_key=key,
                concurrency=100,
                requests=100,
                duration=None,
                workload=Workload.REPEAT,
                timeout=30,
            )
            log(f"  burst: 100 identical requests at once to {name}")
            results[name] = asyncio.run(run_bench(plan))
            calls[name] = _calls(fake)
    relay_result = results["promptrelay"]
    rows = [
        [
            name,
            f"{r.ok}",
            f"{r.failed}",
            f"{calls[name]}",
            f"{r.p50_ms:.1f}",
            f"{r.max_ms:.1f}",
            ", ".join(f"{k} {v}" for k, v in sorted(r.x_cache.items())),
        ]
        for name, r in results.items()
    ]
    checks = [
        at_most(
            "100 identical concurrent misses: upstream calls = 1",
            float(calls["promptrelay"]),
            1.0,
            "",
            0,
        )
    ]
    if relay_result.ok != 100:
        checks.append(Check("all 100 answered 2xx", str(relay_result.ok), False, "failures"))
    return StageResult(
        name="burst",
        title="Burst: 100 identical concurrent misses",
        notes=[
            f"fake upstream answering after {latency_ms} ms so the 100 requests overlap; "
            "100 connections opened at once by promptrelay's loadgen (repeat workload)",
            "baseline: the same burst sent straight to the fake, same run; upstream calls "
            "from the fake's /_fake/stats",
        ],
        header=["target", "2xx", "failed", "upstream calls", "p50 ms", "max ms", "x-cache"],
        rows=rows,
        checks=checks,
        data={name: {**r.to_json(), "upstream_calls": calls[name]} for name, r in results.items()},
        charts=[
            Chart(
                "upstream calls for 100 identical requests",
                "calls",
                [(name, float(calls[name])) for name in results],
                line=1,
                line_label="target 1",
            )
        ],
    )


# --- workers: 1 vs 2 uvicorn workers sharing Redis, hits ------------------------------------


class RedisService(Service):
    """A throwaway redis-server on a free port (never the machine's own on 6379)."""

    def __init__(self) -> None:
        port = free_port()
        while port == 6379:
            port = free_port()
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.dir]
        super().__init__("redis-server", argv, f"redis://127.0.0.1:{port}/0")

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_processes(pid: int) -> list[psutil.Process]:
    """The processes serving requests: uvicorn's worker children, or `pid` alone."""
    main = psutil.Process(pid)
    children = [
        child for child in main.children() if "resource_tracker" not in " ".join(child.cmdline())
    ]
    return children or [main]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def workers_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    redis, fake = RedisService(), fake_upstream()
    results: dict[int, LoadResult] = {}
    calls: dict[int, int] = {}
    cpu: dict[int, list[float]] = {}
    with services([redis, fake]):
        for workers in (1, 2):
            relay = promptrelay_service(service_url(fake))
            relay.env.update(WORKERS=str(workers), REDIS_ENABLED="true", REDIS_URL=redis.ready_url)
            with services([relay]):
                url, tag = service_url(relay), f"workers-{uuid.uuid4().hex[:8]}"
                log(f"  workers={workers}: hits at c=16 (wrk), Redis shared")
                _wrk_hits(load, url, 16, cfg.warmup + 1, tag)  # every worker has it now
                fake_reset(service_url(fake))
                servers = worker_processes(relay.pid)
                cpu0 = [_cpu(p) for p in servers]
                results[workers] = _wrk_hits(load, url, 16, cfg.duration, tag)
                cpu[workers] = [_cpu(p) - c for p, c in zip(servers, cpu0, strict=True)]
                calls[workers] = _calls(fake)
    one, two = results[1], results[2]
    ratio = two.rps / one.rps if one.rps else math.nan
    rows = [
        _row(
            f"{w} worker{'s' if w > 1 else ''}",
            r,
            [f"{r.rps / one.rps:.2f}x", " / ".join(f"{c:.2f}" for c in cpu[w]), str(calls[w])],
        )
        for w, r in results.items()
    ]
    return StageResult(
        name="workers",
        title="1 vs 2 uvicorn workers sharing Redis: throughput on hits",
        notes=[
            "promptrelay serve with WORKERS=1, then WORKERS=2, REDIS_ENABLED=true against a "
            "redis-server the bench started on a free port; instant fake upstream",
            f"wrk c=16, one prompt (all hits), {cfg.warmup + 1:g} s warm-up then "
            f"{cfg.duration:g} s; baseline: the 1-worker run; wrk shares the 2 cores",
            "CPU s per worker process: user+system seconds of each server process over the "
            "timed window (shows how evenly the kernel spread wrk's 16 connections)",
        ],
        header=[
            *("promptrelay", "req/s", "p50 ms", "p99 ms", "÷ 1 worker"),
            *("CPU s per worker process", "upstream calls", "errors"),
        ],
        rows=rows,
        checks=[at_least("2 workers ÷ 1 worker on hits ≥ 1.3x", ratio, 1.3, "x")],
        data={
            "one_worker": asdict(one) | {"rps": one.rps},
            "two_workers": asdict(two) | {"rps": two.rps},
            "ratio": ratio,
            "upstream_calls_in_timed_windows": calls,
            "cpu_seconds_per_worker": cpu,
        },
        charts=[
            Chart(
                "hits, c=16",
                "req/s (wrk)",
                [("1 worker", one.rps), ("2 workers", two.rps)],
                line=1.3 * one.rps,
                line_label="target 1.3 x one worker",
            )
        ],
    )


# --- memory: RSS idle and after many unique requests -----------------------------------------


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MIB


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/api/health", timeout=5) as response:
        data: dict[str, Any] = json.load(response)
        return data


def one_request(url: str) -> None:
    body = json.dumps(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "idle"}],
        }
    ).encode()
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    request = urllib.request.Request(f"{url}/v1/messages", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def drive_unique(load: WrkLoad, url: str, total: int, tag: str) -> tuple[int, float]:
    """wrk rounds of unique prompts until `total` answers; returns (answers, seconds)."""
    answered, seconds, round_no = 0, 0.0, 0
    while answered < total:
        round_no += 1
        rate = answered / seconds if seconds else 0.0
        window = 3.0 if not rate else max(1.0, math.ceil((total - answered) / rate * 1.05))
        result = load.run(url, 16, window, f"{tag}-r{round_no}")
        answered += result.requests
        seconds += result.seconds
        log(f"    {answered:,} of {total:,} unique requests answered")
    return answered, seconds


def memory_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    cache_max = int(Settings.model_fields["memory_cache_max_bytes"].default)
    fake = fake_upstream()
    ref, relay = reference_proxy(service_url(fake)), promptrelay_service(service_url(fake))
    with services([fake, ref, relay]):
        url = service_url(relay)
        time.sleep(1)
        one_request(url)
        one_request(service_url(ref))
        ref_idle, idle = rss_mib(ref.pid), rss_mib(relay.pid)
        log(f"  memory: idle RSS {idle:.1f} MiB; now {cfg.memory_requests:,} unique requests")
        answered, seconds = drive_unique(load, url, cfg.memory_requests, uuid.uuid4().hex[:8])
        time.sleep(0.5)
        after = rss_mib(relay.pid)
        cache = health(url).get("cache", {})
    bound = idle + cache_max / MIB + 30
    rows = [
        ["reference proxy, idle (after start and one request)", f"{ref_idle:.1f}", "—", "—"],
        ["promptrelay, idle (after start and one request)", f"{idle:.1f}", "—", "—"],
        [
            f"promptrelay after {answered:,} unique requests "
            f"(wrk, {answered / seconds:,.0f} req/s)",
            f"{after:.1f}",
            f"{cache.get('entries', 0):,}",
            f"{cache.get('bytes', 0) / MIB:.1f}",
        ],
    ]
    checks = [
        at_most("idle RSS ≤ 80 MiB", idle, 80, " MiB", 1),
        at_most(
            f"RSS after {answered:,} unique requests ≤ idle + MEMORY_CACHE_MAX_BYTES + 30 MiB "
            f"({bound:.0f} MiB)",
            after,
            bound,
            " MiB",
            1,
        ),
    ]
    return StageResult(
        name="memory",
        title="Memory: RSS idle and after many unique requests",
        notes=[
            f"promptrelay serve, one worker, memory tier only, MEMORY_CACHE_MAX_BYTES at its "
            f"default ({cache_max / MIB:.0f} MiB); RSS of the server process (psutil)",
            "baseline: the minimal reference proxy's idle RSS, same run",
            f"load: wrk c=16, unique prompts, in rounds until {cfg.memory_requests:,} answers",
        ],
        header=["process", "RSS MiB", "cache entries", "cache MiB"],
        rows=rows,
        checks=checks,
        data={
            "reference_idle_mib": ref_idle,
            "idle_mib": idle,
            "after_mib": after,
            "requests": answered,
            "cache": cache,
            "memory_cache_max_bytes": cache_max,
            "bound_mib": bound,
        },
        charts=[
            Chart(
                "RSS",
                "MiB",
                [("reference idle", ref_idle), ("promptrelay idle", idle), ("after load", after)],
                line=bound,
                line_label="bound: idle + cache max + 30 MiB",
            )
        ],
    )


# --- telemetry: on vs off (bench/telemetry.py, when it exists) ------------------------------


def telemetry_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    """Runs bench/telemetry.py and takes its numbers.

    The script is called as `telemetry.py --json PATH --markdown PATH [--quick]`, each
    option only when its --help offers it (else its stdout is the report). From its JSON
    the stage takes `checks` (a list of {target, measured, met, gap}) when present, else
    `cost_pct` (throughput lost with telemetry on, in %) checked against < 5%.
    """
    script = BENCH_DIR / "telemetry.py"
    with tempfile.TemporaryDirectory() as tmp:
        json_path, md_path = Path(tmp) / "telemetry.json", Path(tmp) / "telemetry.md"
        usage = _help_text(script)
        argv = [sys.executable, str(script)]
        if "--json" in usage:
            argv += ["--json", str(json_path)]
        if "--markdown" in usage:
            argv += ["--markdown", str(md_path)]
        if cfg.quick and "--quick" in usage:
            argv.append("--quick")
        log(f"  telemetry: {' '.join(argv[1:])}")
        done = subprocess.run(argv, cwd=BENCH_DIR.parent, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"bench/telemetry.py failed ({done.returncode}):\n{done.stderr}")
        data: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
        markdown = md_path.read_text() if md_path.exists() else done.stdout
    return StageResult(
        name="telemetry",
        title="Telemetry on vs off",
        notes=["measured by bench/telemetry.py (its own report follows)"],
        header=[],
        rows=[],
        checks=_telemetry_checks(data),
        data=data,
        extra_markdown=_demote_headings(markdown),
    )


def _help_text(script: Path) -> str:
    done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    return done.stdout


def _telemetry_checks(data: dict[str, Any]) -> list[Check]:
    if isinstance(data.get("checks"), list):
        return [
            Check(str(c.get("target")), str(c.get("measured")), c.get("met"), str(c.get("gap", "")))
            for c in data["checks"]
            if isinstance(c, dict)
        ]
    cost = data.get("cost_pct")
    if isinstance(cost, int | float):
        return [at_most("telemetry costs < 5% throughput", float(cost), 5.0, "%")]
    return [Check("telemetry costs < 5% throughput", "not found in telemetry.py's JSON", None)]


def _demote_headings(markdown: str) -> str:
    return "\n".join(
        "##" + line if line.startswith("#") else line for line in markdown.splitlines()
    )


# --- dashboard: time to first paint (reported, no target) --------------------------------


def dashboard_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    import dashboard_paint

    rows, data = dashboard_paint.run(2 if cfg.quick else 5)
    notes = [
        "Headless Chromium loads /dashboard in a fresh context each time, from a server "
        "that has seen 50 requests; first data is when the first /api/dashboard answer "
        "has been drawn. Reported only: the machine is shared."
    ]
    return StageResult(
        "dashboard", "Dashboard: time to first paint", notes, dashboard_paint.HEADER, rows, [], data
    )


STAGES = {
    "overhead": overhead_stage,
    "slowup": suite_scale.slow_upstream_stage,
    "streams": suite_scale.streams_stage,
    "hits": suite_scale.hits_stage,
    "cache": cache_stage,
    "burst": burst_stage,
    "workers": workers_stage,
    "memory": memory_stage,
    "telemetry": telemetry_stage,
    "dashboard": dashboard_stage,
}


def available_stages() -> list[str]:
    """Every stage; telemetry only when bench/telemetry.py exists, dashboard only with
    Debian's chromium installed."""
    names = list(STAGES)
    if not (BENCH_DIR / "telemetry.py").exists():
        names.remove("telemetry")
    if not Path("/usr/bin/chromium").exists():
        names.remove("dashboard")
    return names
