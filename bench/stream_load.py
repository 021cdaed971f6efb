"""Load generator for streamed answers, run as its own process: SSE events and tail latency.

`--concurrency` workers, each opening a streamed `POST /v1/messages` (a different prompt
every time, so every stream is a miss) and reading it to its end, then the next, until
`--duration` seconds have passed (streams under way then are read to their end); every
worker opens at least one, however slow the machine. Worker starts are spread over the
first second (or the whole run, if shorter) so the streams do not all tick in step. Every
answer is checked: a 2xx whose body holds `message_stop`, with at least
`--expect-events` SSE events (blank-line separated), else it counts as an error.

For each stream it records the time to its first byte and to its last event. The CPU of
the processes named by `--pid` (the server under test, the upstream) is read with psutil
when the load starts and when the last stream ends, and their RSS is sampled every
0.25 s (the peak is reported). One JSON object goes to stdout:

    python bench/stream_load.py --url http://127.0.0.1:9001 --concurrency 500 \\
        --duration 20 --deltas 200 --pid 1234 --pid 1235
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

_HEADERS = {
    "content-type": "application/json",
    "x-api-key": "bench-key",
    "anthropic-version": "2023-06-01",
}


@dataclass
class Tally:
    started: int = 0
    ok: int = 0
    events: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_byte: list[float] = field(default_factory=list)
    last_event: list[float] = field(default_factory=list)


def prompt_body(tag: str, n: int, chars: int) -> bytes:
    """A streamed request whose prompt is `chars` long: the fake echoes it back, so the
    answer has enough text for the deltas asked of it."""
    head = f"stream {tag} n{n} "
    prompt = head + "x" * max(0, chars - len(head))
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    return json.dumps(body).encode()


async def one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, expect: int, tally: Tally
) -> None:
    tally.started += 1
    sent = time.perf_counter()
    first = last = sent
    events, ended_nl, tail = 0, False, b""
    try:
        async with session.post(url, data=body, headers=_HEADERS) as response:
            async for chunk in response.content.iter_any():
                last = time.perf_counter()
                if events == 0 and not tail:
                    first = last
                events += chunk.count(b"\n\n") + (ended_nl and chunk[:1] == b"\n")
                ended_nl = chunk[-1:] == b"\n"
                tail = (tail + chunk)[-256:]
            status = response.status
    except TimeoutError:
        tally.errors["timeout"] += 1
        return
    except aiohttp.ClientError as error:
        tally.errors[type(error).__name__] += 1
        return
    if not 200 <= status < 300:
        tally.errors[str(status)] += 1
    elif b"message_stop" not in tail or events < expect:
        tally.errors["incomplete stream"] += 1
    else:
        tally.ok += 1
        tally.events += events
        tally.first_byte.append(first - sent)
        tally.last_event.append(last - sent)


def percentile_ms(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * pct / 100))
    return ordered[rank - 1] * 1e3


async def sample_rss(processes: list[psutil.Process], peak: dict[int, float]) -> None:
    while True:
        for process in processes:
            try:
                rss = process.memory_info().rss / (1024 * 1024)
            except psutil.Error:
                continue
            peak[process.pid] = max(peak.get(process.pid, 0.0), rss)
        await asyncio.sleep(0.25)


def cpu_of(processes: list[psutil.Process]) -> dict[int, float]:
    return {p.pid: float(sum(p.cpu_times()[:2])) for p in processes}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url.rstrip("/") + "/v1/messages"
    tag = uuid.uuid4().hex[:10]
    chars = args.prompt_chars or min(2000, max(64, 4 * args.deltas))
    tally = Tally()
    processes = [psutil.Process(pid) for pid in args.pid]
    me = psutil.Process()
    peak: dict[int, float] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency, limit_per_host=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    numbers = iter(range(1, 1 << 62))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        sampler = asyncio.ensure_future(sample_rss(processes, peak))
        cpu0, me0, start = cpu_of(processes), sum(me.cpu_times()[:2]), time.perf_counter()
        deadline = start + args.duration

        async def worker(i: int) -> None:
            await asyncio.sleep(i / args.concurrency * min(1.0, args.duration))
            while True:
                body = prompt_body(tag, next(numbers), chars)
                await one_stream(session, url, body, args.expect_events, tally)
                if time.perf_counter() >= deadline:
                    return

        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
        seconds = time.perf_counter() - start
        cpu1, me1 = cpu_of(processes), sum(me.cpu_times()[:2])
        sampler.cancel()
    return {
        "concurrency": args.concurrency,
        "seconds": seconds,
        "streams_started": tally.started,
        "streams_ok": tally.ok,
        "events": tally.events,
        "events_per_stream": tally.events / tally.ok if tally.ok else math.nan,
        "errors": dict(tally.errors),
        "first_byte_p50_ms": percentile_ms(tally.first_byte, 50),
        "last_event_p50_ms": percentile_ms(tally.last_event, 50),
        "last_event_p99_ms": percentile_ms(tally.last_event, 99),
        "last_event_max_ms": percentile_ms(tally.last_event, 100),
        "cpu_seconds": {str(pid): cpu1[pid] - cpu0[pid] for pid in cpu0},
        "peak_rss_mib": {str(pid): value for pid, value in peak.items()},
        "client_cpu_pct": (me1 - me0) / seconds * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL; streams go to URL/v1/messages")
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to start streams")
    parser.add_argument("--deltas", type=int, default=200, help="text deltas the upstream sends")
    parser.add_argument("--expect-events", type=int, default=1, help="fewer is an error")
    parser.add_argument("--prompt-chars", type=int, default=0, help="default: 4 per delta")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per stream")
    parser.add_argument("--pid", type=int, action="append", default=[], help="CPU/RSS of")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # optional
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
