"""`promptrelay bench`: a load generator for promptrelay or any Anthropic-compatible URL.

It POSTs Messages API bodies to `{url}/v1/messages` over one aiohttp session whose
connector holds at most `concurrency` connections, and reports what it saw: answers per
second, latency percentiles of the 2xx answers, failures by HTTP status or by kind
(timeout, connection), and the hit rate from promptrelay's `x-cache` header.

Two loops, and the report says which one ran:
- closed (default): `concurrency` workers, each sends its next request as soon as its
  previous answer arrived. The server's speed sets the request rate, so a slow server is
  offered less load (latency is then the server's, not a queue's).
- open (`rate` set): requests start on a fixed schedule, `rate` per second, whatever the
  answers do. A request's latency counts from its scheduled start, so waiting for a free
  connection in this client counts too (no coordinated omission).

This client is Python: on a small machine it can be the bottleneck before the server is
(the report shows this process's CPU use; bench/ uses `wrk` for throughput figures).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import orjson
import psutil

__all__ = [
    "BenchResult",
    "LoadPlan",
    "Workload",
    "percentile",
    "run_bench",
]


class Workload(StrEnum):
    UNIQUE = "unique"  # a different prompt every request: all misses
    REPEAT = "repeat"  # one prompt: all hits after the first answer
    ZIPF = "zipf"  # `prompts` prompts, rank k drawn with weight 1/k**exponent
    STREAM = "stream"  # a different prompt every request, "stream": true, read to the end


@dataclass(frozen=True)
class LoadPlan:
    """What to send. Exactly one of `duration` and `requests` bounds the run."""

    url: str
    concurrency: int = 16
    duration: float | None = 10.0
    requests: int | None = None
    workload: Workload = Workload.UNIQUE
    prompts: int = 200
    exponent: float = 1.1
    rate: float | None = None  # open loop at this many requests per second when set
    api_key: str | None = None
    model: str = "claude-sonnet-4-6"
    max_tokens: int = 64
    timeout: float = 60.0
    seed: int = 1
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if (self.duration is None) == (self.requests is None):
            raise ValueError("give exactly one of duration and requests")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.prompts < 1:
            raise ValueError("prompts must be at least 1")

    @property
    def loop(self) -> str:
        return "closed" if self.rate is None else "open"


@dataclass
class BenchResult:
    """What one run saw. Latencies are of 2xx answers, in milliseconds."""

    url: str
    workload: str
    loop: str
    concurrency: int
    rate: float | None
    sent: int
    ok: int
    errors: dict[str, int]  # HTTP status ("429") or kind ("timeout", "connection") -> count
    x_cache: dict[str, int]  # x-cache value of 2xx answers -> count ("none" when absent)
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_pct: float  # this process's CPU over the run, % of one core
    events: int = 0  # SSE events (blank-line separated) in the 2xx event-stream answers

    @property
    def rps(self) -> float:
        """2xx answers per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def hit_rate(self) -> float | None:
        """HITs among 2xx answers that carried `x-cache`; None when none carried it."""
        labelled = sum(n for label, n in self.x_cache.items() if label != "none")
        return self.x_cache.get("HIT", 0) / labelled if labelled else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rps": self.rps,
            "events_per_s": self.events_per_s,
            "failed": self.failed,
            "hit_rate": self.hit_rate,
        }


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(len(ordered) * pct / 100))
    return ordered[min(rank, len(ordered)) - 1]


# --- request bodies -----------------------------------------------------------------------


def body_maker(plan: LoadPlan) -> Callable[[int], bytes]:
    """Request number -> body. Prompts carry the run's tag so runs never share a prompt."""
    head = orjson.dumps({"model": plan.model, "max_tokens": plan.max_tokens})[:-1]
    stream = b',"stream":true' if plan.workload is Workload.STREAM else b""

    def body(prompt: str) -> bytes:
        messages = orjson.dumps([{"role": "user", "content": prompt}])
        return head + stream + b',"messages":' + messages + b"}"

    prefix = f"promptrelay bench {plan.tag}"
    if plan.workload is Workload.REPEAT:
        fixed = body(f"{prefix} repeat")
        return lambda n: fixed
    if plan.workload is Workload.ZIPF:
        bodies = [body(f"{prefix} zipf rank {k}") for k in range(1, plan.prompts + 1)]
        cumulative = list(
            itertools.accumulate(1.0 / k**plan.exponent for k in range(1, plan.prompts + 1))
        )
        rng = random.Random(plan.seed)

        def zipf(n: int) -> bytes:
            point = rng.random() * cumulative[-1]
            return bodies[min(bisect.bisect_right(cumulative, point), plan.prompts - 1)]

        return zipf
    return lambda n: body(f"{prefix} n{n}")


# --- the run ----------------------------------------------------------------------------


class _Tally:
    """Counters shared by the request tasks (one event loop: no locks needed)."""

    def __init__(self) -> None:
        self.sent = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.x_cache: Counter[str] = Counter()
        self.events = 0
        self.last_done = 0.0


async def _one(
    session: aiohttp.ClientSession,
    endpoint: str,
    headers: dict[str, str],
    data: bytes,
    started: float,
    tally: _Tally,
) -> None:
    """Send one request, read the whole answer (streams to the end), record the outcome."""
    tally.sent += 1
    events, ended_nl = 0, False
    try:
        async with session.post(endpoint, data=data, headers=headers) as response:
            sse = response.headers.get("content-type", "").startswith("text/event-stream")
            async for chunk in response.content.iter_any():
                if sse:  # events end with a blank line, which may straddle two reads
                    events += chunk.count(b"\n\n") + (ended_nl and chunk[:1] == b"\n")
                    ended_nl = chunk[-1:] == b"\n"
            status, label = response.status, response.headers.get("x-cache")
    except TimeoutError:
        tally.errors["timeout"] += 1
    except aiohttp.ClientError:
        tally.errors["connection"] += 1
    else:
        if 200 <= status < 300:
            tally.latencies.append(time.perf_counter() - started)
            tally.x_cache["none" if label is None else label.upper()] += 1
            tally.events += events
        else:
            tally.errors[str(status)] += 1
    tally.last_done = time.perf_counter()


async def run_bench(
    plan: LoadPlan, progress: Callable[[int, float], None] | None = None
) -> BenchResult:
    """Drive the load described by `plan`; `progress(sent, elapsed_s)` is called ~10x a second."""
    endpoint = plan.url.rstrip("/") + "/v1/messages"
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    if plan.api_key:
        headers["x-api-key"] = plan.api_key
    make_body = body_maker(plan)
    tally = _Tally()
    connector = aiohttp.TCPConnector(limit=plan.concurrency, limit_per_host=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=plan.timeout)
    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        tally.last_done = start
        deadline = start + plan.duration if plan.duration is not None else math.inf
        numbers = itertools.count(1) if plan.requests is None else iter(range(1, plan.requests + 1))

        def send(n: int, started: float) -> asyncio.Task[None]:
            return asyncio.ensure_future(
                _one(session, endpoint, headers, make_body(n), started, tally)
            )

        if plan.rate is None:
            load = _closed_loop(plan.concurrency, numbers, deadline, send)
        else:
            load = _open_loop(plan.rate, start, numbers, deadline, send)
        ticker = asyncio.ensure_future(_tick(progress, tally, start))
        try:
            await load
        finally:
            ticker.cancel()
        # A duration run's window is its duration at least: its last answer may land a
        # moment before the deadline that its worker then finds passed.
        end = max(tally.last_done, deadline) if plan.duration is not None else tally.last_done
    cpu = sum(me.cpu_times()[:2]) - cpu0
    seconds = max(end - start, 1e-9)
    if progress is not None:
        progress(tally.sent, seconds)
    ordered = sorted(tally.latencies)
    return BenchResult(
        url=plan.url,
        workload=plan.workload.value,
        loop=plan.loop,
        concurrency=plan.concurrency,
        rate=plan.rate,
        sent=tally.sent,
        ok=len(ordered),
        errors=dict(tally.errors),
        x_cache=dict(tally.x_cache),
        seconds=seconds,
        p50_ms=percentile(ordered, 50) * 1e3,
        p95_ms=percentile(ordered, 95) * 1e3,
        p99_ms=percentile(ordered, 99) * 1e3,
        max_ms=ordered[-1] * 1e3 if ordered else math.nan,
        client_cpu_pct=cpu / seconds * 100,
        events=tally.events,
    )


Sender = Callable[[int, float], "asyncio.Task[None]"]


async def _closed_loop(
    concurrency: int, numbers: Iterator[int], deadline: float, send: Sender
) -> None:
    """`concurrency` workers; each starts its next request when its last one is answered."""

    async def worker() -> None:
        while (now := time.perf_counter()) < deadline:
            n = next(numbers, None)
            if n is None:
                return
            await send(n, now)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open_loop(
    rate: float, start: float, numbers: Iterator[int], deadline: float, send: Sender
) -> None:
    """Start request i at start + i/rate, answered or not; wait for all at the end."""
    pending: set[asyncio.Task[None]] = set()
    for i, n in enumerate(numbers):
        scheduled = start + i / rate
        if scheduled >= deadline:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = send(n, scheduled)
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def _tick(progress: Callable[[int, float], None] | None, tally: _Tally, start: float) -> None:
    if progress is None:
        return
    while True:
        progress(tally.sent, time.perf_counter() - start)
        await asyncio.sleep(0.1)
