"""The suite's workloads at scale (issue 17), each beside its floor in the same run.

- streams: the fake upstream paces N text deltas M ms apart (a model generating); C
  streams at once through the minimal aiohttp proxy (bench/reference_proxy.py, streaming
  pass-through), then through promptrelay. Load: bench/stream_load.py in its own process.
- slowup: a slow upstream (200 ms) at 1,024 concurrent requests, misses, with wrk:
  direct, the minimal proxy and promptrelay, the limits raised to fit (said in the notes).
- hits: one prompt over and over (all hits) with wrk against promptrelay, and against a
  raw ASGI callable answering the stored body under the same uvicorn options
  (bench/raw_asgi.py).

CPU per request or per event: user+system seconds of the server process (psutil) over
the timed window, divided by the answers or SSE events in it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from benchkit import (
    API_KEY,
    BENCH_DIR,
    LoadResult,
    Service,
    WrkLoad,
    fake_upstream,
    free_port,
    log,
    reference_proxy,
    service_url,
    services,
)
from overhead import promptrelay_service
from suite_report import Chart, Check, StageResult, at_least, at_most

if TYPE_CHECKING:
    from suite_stages import SuiteConfig

MIB = 1024 * 1024
REFERENCE, PROMPTRELAY, DIRECT, RAW = "minimal proxy", "promptrelay", "direct to fake", "raw ASGI"


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MIB


def raise_nofile(need: int) -> str:
    """Raise this process's RLIMIT_NOFILE soft limit (the servers it starts inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return f"RLIMIT_NOFILE {soft} (≥ {need} needed: left as it was)"
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    short = "" if target >= need else f", short of the {need} wanted (hard limit)"
    return f"RLIMIT_NOFILE raised from {soft} to {target} for every process of the stage{short}"


def _pool_env(pool: int) -> dict[str, str]:
    """promptrelay's upstream pool as large as the minimal proxy's, every idle one kept."""
    return {"MAX_SOCKETS": str(pool), "MAX_FREE_SOCKETS": str(pool)}


def _verdict(check: Check) -> str:
    return f"{check.target.split(': ', 1)[-1]} — {check.verdict}"


# --- streams: paced SSE through the minimal proxy vs promptrelay ----------------------------


def _stream_run(
    url: str, server: Service, fake: Service, cfg: SuiteConfig, concurrency: int, seconds: float
) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH_DIR / "stream_load.py"), "--url", url]
    argv += ["--concurrency", str(concurrency), "--duration", str(seconds)]
    argv += ["--deltas", str(cfg.stream_deltas), "--expect-events", str(cfg.stream_deltas)]
    argv += ["--pid", str(server.pid), "--pid", str(fake.pid)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stream_load.py failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    cpu = result["cpu_seconds"]
    result["server_cpu_s"] = cpu[str(server.pid)]
    result["fake_cpu_s"] = cpu[str(fake.pid)]
    result["server_peak_rss_mib"] = result["peak_rss_mib"].get(str(server.pid), math.nan)
    events = max(result["events"], 1)
    result["cpu_us_per_event"] = result["server_cpu_s"] * 1e6 / events
    result["cpu_ms_per_stream"] = result["server_cpu_s"] * 1e3 / max(result["streams_ok"], 1)
    result["core_pct"] = result["server_cpu_s"] / result["seconds"] * 100
    result["error_count"] = sum(result["errors"].values())
    return result


def _stream_row(name: str, r: dict[str, Any], verdicts: str) -> list[str]:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"
    return [
        name,
        f"{r['streams_ok']:,}",
        f"{r['events_per_stream']:.0f}",
        f"{r['events'] / r['seconds']:,.0f}",
        f"{r['cpu_us_per_event']:.1f}",
        f"{r['cpu_ms_per_stream']:.2f}",
        f"{r['core_pct']:.0f}%",
        f"{r['first_byte_p50_ms']:.0f}",
        f"{r['last_event_p50_ms']:,.0f}",
        f"{r['last_event_p99_ms']:,.0f}",
        errors,
        f"{r['server_peak_rss_mib']:.0f}",
        verdicts,
    ]


def streams_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    c, n, m = cfg.stream_concurrency, cfg.stream_deltas, cfg.stream_interval_ms
    nofile = raise_nofile(4 * c + 256)
    pool = c + 64
    log(f"  streams: {nofile}; promptrelay MAX_SOCKETS=MAX_FREE_SOCKETS={pool}")
    fake = fake_upstream("--stream-chunks", str(n), "--chunk-interval-ms", f"{m:g}")
    ref = reference_proxy(service_url(fake), pool=pool)
    relay = promptrelay_service(service_url(fake), **_pool_env(pool))
    results: dict[str, dict[str, Any]] = {}
    with services([fake, ref, relay]):
        for name, server in ((REFERENCE, ref), (PROMPTRELAY, relay)):
            url = service_url(server)
            log(f"  streams, {name}: warm-up (32 streams), then c={c} for {cfg.stream_seconds:g} s")
            _stream_run(url, server, fake, cfg, min(32, c), 1.0)  # one stream per worker
            results[name] = _stream_run(url, server, fake, cfg, c, cfg.stream_seconds)
            results[name]["load_average_after"] = os.getloadavg()[0]
    ref_r, relay_r = results[REFERENCE], results[PROMPTRELAY]
    cpu_ratio = relay_r["cpu_us_per_event"] / ref_r["cpu_us_per_event"]
    p99_bound = ref_r["last_event_p99_ms"] + 100
    checks = [
        at_most(f"streams c={c}: CPU per event ÷ minimal proxy ≤ 1.15", cpu_ratio, 1.15, "x"),
        at_most(
            f"streams c={c}: p99 time to last event ≤ proxy p99 + 100 ms ({p99_bound:,.0f} ms)",
            relay_r["last_event_p99_ms"],
            p99_bound,
            " ms",
            0,
        ),
        at_most(f"streams c={c}: errors = 0", float(relay_r["error_count"]), 0, "", 0),
        at_most(f"streams c={c}: RSS ≤ 150 MiB", relay_r["server_peak_rss_mib"], 150, " MiB", 0),
    ]
    rows = [
        _stream_row(REFERENCE, ref_r, "floor"),
        _stream_row(PROMPTRELAY, relay_r, "; ".join(_verdict(x) for x in checks)),
    ]
    return StageResult(
        name="streams",
        title=f"Realistic streams: {c} at once, {n} deltas {m:g} ms apart, minimal proxy vs "
        "promptrelay",
        notes=[
            f"fake upstream: `promptrelay fake-upstream --stream-chunks {n} "
            f"--chunk-interval-ms {m:g}` (each answer {n} text deltas plus 7 other events, "
            f"{n * m / 1000:g} s of generation); every stream a different prompt (all misses)",
            f"load: bench/stream_load.py in its own process, {c} workers, closed loop, new "
            f"streams for {cfg.stream_seconds:g} s then the last ones read to their end; "
            "latency = time to the last event; a stream without message_stop or with "
            f"fewer than {n} events is an error; warm-up: 32 streams",
            "baseline: the minimal aiohttp proxy streaming chunks as they arrive, same run, "
            f"same fake; both with an upstream pool of {pool} (promptrelay: MAX_SOCKETS="
            f"MAX_FREE_SOCKETS={pool}); {nofile}",
            "CPU: user+system seconds of the server process over the run ÷ SSE events "
            "delivered (µs/event) or ÷ streams; core % = that CPU ÷ wall time; RSS: peak, "
            "sampled every 0.25 s",
            "1-minute load average after each run: "
            + ", ".join(f"{k} {v['load_average_after']:.1f}" for k, v in results.items())
            + f" (nproc {os.cpu_count()}): a server that needs more CPU than the machine "
            "gives it falls behind the upstream's pace, which shows in p50/p99",
        ],
        header=[
            *("server", "streams ok", "events/stream", "events/s", "CPU µs/event"),
            *("CPU ms/stream", "core", "first byte p50 ms", "p50 ms", "p99 ms", "errors"),
            *("peak RSS MiB", "target / verdict"),
        ],
        rows=rows,
        checks=checks,
        data={"results": results, "cpu_per_event_ratio": cpu_ratio, "pool": pool},
        charts=[
            Chart(
                "CPU per event",
                "µs of the server process",
                [(k, v["cpu_us_per_event"]) for k, v in results.items()],
                line=1.15 * ref_r["cpu_us_per_event"],
                line_label="target 1.15 x proxy",
            ),
            Chart(
                "p99 time to last event",
                "ms",
                [(k, v["last_event_p99_ms"]) for k, v in results.items()],
                line=p99_bound,
                line_label="target proxy + 100 ms",
            ),
        ],
    )


# --- slowup: 1,024 concurrent misses on a 200 ms upstream -----------------------------------


def _wrk_cell(
    load: WrkLoad, url: str, server: Service | None, cfg: SuiteConfig, concurrency: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    load.run(url, concurrency, cfg.slow_warmup, f"warm-{tag}")
    cpu0 = server.cpu_seconds() if server else 0.0
    result = load.run(url, concurrency, cfg.slow_seconds, f"slow-{tag}")
    cpu = server.cpu_seconds() - cpu0 if server else math.nan
    return {
        "result": result,
        "cpu_ms_per_request": cpu * 1e3 / max(result.requests, 1),
        "rss_mib": rss_mib(server.pid) if server else math.nan,
    }


def _cells_json(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The wrk cells of a stage as JSON: each LoadResult's fields and its req/s."""
    return {
        k: {**v, "result": {**v["result"].__dict__, "rps": v["result"].rps}}
        for k, v in cells.items()
    }


def _wrk_row(name: str, cell: dict[str, Any], floor: LoadResult | None, verdict: str) -> list[str]:
    r: LoadResult = cell["result"]
    ratio = f"{r.rps / floor.rps:.2f}x" if floor and floor.rps else "—"
    cpu, rss = cell["cpu_ms_per_request"], cell["rss_mib"]
    return [
        name,
        f"{r.rps:,.0f}",
        ratio,
        f"{r.p50_ms:,.1f}",
        f"{r.p99_ms:,.1f}",
        "—" if math.isnan(cpu) else f"{cpu:.3f}",
        str(r.errors),
        "—" if math.isnan(rss) else f"{rss:.0f}",
        verdict,
    ]


def slow_upstream_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    c, latency = cfg.slow_concurrency, cfg.slow_latency_ms
    nofile = raise_nofile(4 * c + 256)
    pool = c + 64
    env = _pool_env(pool)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft - pool - 64 < c + 64:  # MAX_CONNECTIONS derived from RLIMIT_NOFILE too small
        env["MAX_CONNECTIONS"] = str(c + 64)
    log(f"  slowup: {nofile}; promptrelay {', '.join(f'{k}={v}' for k, v in env.items())}")
    fake = fake_upstream("--latency-ms", f"{latency:g}")
    ref = reference_proxy(service_url(fake), pool=pool)
    relay = promptrelay_service(service_url(fake), **env)
    cells: dict[str, dict[str, Any]] = {}
    with services([fake, ref, relay]):
        for name, url, server in (
            (DIRECT, service_url(fake), None),
            (REFERENCE, service_url(ref), ref),
            (PROMPTRELAY, service_url(relay), relay),
        ):
            log(f"  slow upstream, {name}: c={c}, {cfg.slow_warmup:g} s + {cfg.slow_seconds:g} s")
            cells[name] = _wrk_cell(load, url, server, cfg, c)
    ref_r, relay_r = cells[REFERENCE]["result"], cells[PROMPTRELAY]["result"]
    ratio = relay_r.rps / ref_r.rps if ref_r.rps else math.nan
    p99_ratio = relay_r.p99_ms / ref_r.p99_ms if ref_r.p99_ms else math.nan
    what = f"misses c={c}, {latency:g} ms upstream"
    checks = [
        at_least(f"{what}: req/s ÷ minimal proxy ≥ 0.85", ratio, 0.85, "x"),
        at_most(f"{what}: p99 ÷ minimal proxy's p99 ≤ 1.5", p99_ratio, 1.5, "x"),
    ]
    raised = ", ".join(f"{k}={v}" for k, v in env.items())
    rows = [
        _wrk_row(DIRECT, cells[DIRECT], None, "upstream bound"),
        _wrk_row(REFERENCE, cells[REFERENCE], ref_r, "floor"),
        _wrk_row(PROMPTRELAY, cells[PROMPTRELAY], ref_r, "; ".join(_verdict(x) for x in checks)),
    ]
    return StageResult(
        name="slowup",
        title=f"High concurrency on a slow upstream: {c} concurrent misses, {latency:g} ms "
        "upstream",
        notes=[
            f"fake upstream answering after {latency:g} ms (`--latency-ms {latency:g}`); wrk "
            f"-c{c} with a unique prompt per request (all misses), {cfg.slow_warmup:g} s "
            f"warm-up then {cfg.slow_seconds:g} s per target; bound: {c} ÷ "
            f"{latency / 1000:g} s = {c / latency * 1000:,.0f} req/s",
            f"raised for this stage: {nofile}; promptrelay {raised}; the minimal proxy's "
            f"aiohttp pool limit {pool} (`--pool {pool}`)",
            "CPU: user+system seconds of the server process over the timed window ÷ answers; "
            "RSS after the window",
        ],
        header=[
            *("target", "req/s", "÷ minimal proxy", "p50 ms", "p99 ms", "CPU ms/req"),
            *("errors", "RSS MiB", "target / verdict"),
        ],
        rows=rows,
        checks=checks,
        data={
            "cells": _cells_json(cells),
            "ratio": ratio,
            "p99_ratio": p99_ratio,
            "settings": env,
            "nofile": nofile,
        },
        charts=[
            Chart(
                f"c={c}, {latency:g} ms upstream",
                "req/s (wrk)",
                [(k, v["result"].rps) for k, v in cells.items()],
                line=0.85 * ref_r.rps,
                line_label="target 0.85 x proxy",
            ),
            Chart("p99", "ms", [(k, v["result"].p99_ms) for k, v in cells.items()]),
        ],
    )


# --- hits: promptrelay's memory tier vs a raw ASGI callable answering a stored body ---------


HIT_SCRIPT = "pool_post.lua"  # with args "1 0": one prompt, so all hits after the first


def _hit_body(tag: str) -> bytes:
    """The request pool_post.lua sends with args `tag 1 0`, byte for byte."""
    return (
        b'{"model":"claude-sonnet-4-6","max_tokens":64,"messages":[{"role":"user","content":"'
        + f"bench {tag} pool 1".encode()
        + b'"}]}'
    )


def _stored_answer(url: str, tag: str) -> bytes:
    headers = {"content-type": "application/json", "x-api-key": API_KEY}
    request = urllib.request.Request(f"{url}/v1/messages", data=_hit_body(tag), headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.headers.get("x-cache", "").upper() != "HIT":
            raise RuntimeError("the stored answer was not a hit")
        body: bytes = response.read()
        return body


def raw_asgi(body_file: Path) -> Service:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "raw_asgi.py"), "--port", str(port)]
    argv += ["--body-file", str(body_file)]
    return Service("raw ASGI", argv, f"http://127.0.0.1:{port}/")


def _hit_cell(
    load: WrkLoad, url: str, server: Service, cfg: SuiteConfig, tag: str
) -> dict[str, Any]:
    args = ("1", "0")
    load.run(url, 16, cfg.warmup, tag, script=HIT_SCRIPT, script_args=args)
    cpu0 = server.cpu_seconds()
    result = load.run(url, 16, cfg.duration, tag, script=HIT_SCRIPT, script_args=args)
    cpu = server.cpu_seconds() - cpu0
    return {
        "result": result,
        "cpu_ms_per_request": cpu * 1e3 / max(result.requests, 1),
        "rss_mib": rss_mib(server.pid),
    }


def hits_stage(cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    tag = f"hits-{uuid.uuid4().hex[:8]}"
    fake = fake_upstream()
    relay = promptrelay_service(service_url(fake))
    cells: dict[str, dict[str, Any]] = {}
    with services([fake, relay]), tempfile.TemporaryDirectory(prefix="bench-hits-") as tmp:
        url = service_url(relay)
        log(f"  hits, {PROMPTRELAY}: c=16, {cfg.warmup:g} s + {cfg.duration:g} s")
        cells[PROMPTRELAY] = _hit_cell(load, url, relay, cfg, tag)
        body_file = Path(tmp) / "hit.json"
        body_file.write_bytes(_stored_answer(url, tag))
        raw = raw_asgi(body_file)
        raw.env.update(relay.env)
        with services([raw]):
            log(f"  hits, {RAW}: c=16, {cfg.warmup:g} s + {cfg.duration:g} s")
            cells[RAW] = _hit_cell(load, service_url(raw), raw, cfg, tag)
        size = body_file.stat().st_size
    raw_r, relay_r = cells[RAW]["result"], cells[PROMPTRELAY]["result"]
    ratio = relay_r.rps / raw_r.rps if raw_r.rps else math.nan
    checks = [
        at_least("hits c=16: req/s ÷ raw ASGI callable ≥ 0.5", ratio, 0.5, "x"),
        at_most("hits c=16: p50 ≤ 1 ms", relay_r.p50_ms, 1.0, " ms"),
    ]
    rows = [
        _wrk_row(RAW, cells[RAW], raw_r, "floor"),
        _wrk_row(PROMPTRELAY, cells[PROMPTRELAY], raw_r, "; ".join(_verdict(x) for x in checks)),
    ]
    return StageResult(
        name="hits",
        title="Hits vs a raw ASGI callable answering the stored body",
        notes=[
            "wrk c=16, one prompt (bench/pool_post.lua `1 0`: all hits after the first), "
            f"{cfg.warmup:g} s warm-up then {cfg.duration:g} s per server",
            "promptrelay: memory tier only (REDIS_ENABLED=false); floor: bench/raw_asgi.py, "
            f"which reads the request and answers the same stored body ({size:,} bytes, "
            "fetched from promptrelay as a hit) under the same uvicorn options "
            "(promptrelay.server.options.uvicorn_options)",
            "CPU: user+system seconds of the server process over the timed window ÷ answers; "
            "RSS after the window",
        ],
        header=[
            *("server", "req/s", "÷ raw ASGI", "p50 ms", "p99 ms", "CPU ms/req"),
            *("errors", "RSS MiB", "target / verdict"),
        ],
        rows=rows,
        checks=checks,
        data={
            "cells": _cells_json(cells),
            "ratio": ratio,
            "body_bytes": size,
        },
        charts=[
            Chart(
                "hits, c=16",
                "req/s (wrk)",
                [(k, v["result"].rps) for k, v in cells.items()],
                line=0.5 * raw_r.rps,
                line_label="target 0.5 x raw ASGI",
            )
        ],
    )
