"""What promptrelay's memory cache buys: hit vs miss latency, and hit rate under Zipf load.

Starts, on free loopback ports, two fake Anthropic APIs (one answering after 1 s, one
instantly) and one `promptrelay serve` in front of each (ANTHROPIC_API_KEY=x, Redis off,
so the memory cache only). Then, with a closed-loop aiohttp client in this process:

1. hits vs misses: N unique prompts at concurrency C against the 1 s upstream (all
   misses), then the same N again (all hits); p50/p99 of each, hits checked by `x-cache`.
2. Zipf: R requests over K distinct prompts, prompt of rank k drawn with weight 1/k**s
   (random.choices, fixed seed), instant upstream, concurrency 16; hit rate from
   `x-cache`, req/s, and upstream calls from the fake's GET /_fake/stats.

    .venv/bin/python bench/cache.py [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from benchkit import (
    BIN_DIR,
    Service,
    _new_loop,
    _percentile,
    fake_reset,
    fake_stats,
    free_port,
    log,
    machine_lines,
    markdown_table,
    service_url,
    services,
    write_outputs,
)
from overhead import promptrelay_service

MODEL = "claude-sonnet-4-6"
HEADERS = {
    "content-type": "application/json",
    "x-api-key": "anything",
    "anthropic-version": "2023-06-01",
}


@dataclass(frozen=True)
class Batch:
    label: str
    requests: int
    concurrency: int
    seconds: float
    p50_ms: float
    p99_ms: float
    x_cache: dict[str, int]  # x-cache header value -> count ("none" when absent)
    errors: int  # failed or non-2xx

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def hit_rate(self) -> float:
        return self.x_cache.get("HIT", 0) / self.requests if self.requests else 0.0


def fake_service(latency_ms: float) -> Service:
    port = free_port()
    argv = [str(BIN_DIR / "promptrelay"), "fake-upstream", "--port", str(port)]
    argv += ["--latency-ms", f"{latency_ms:g}"]
    name = f"fake upstream ({latency_ms:g} ms)"
    return Service(name, argv, f"http://127.0.0.1:{port}/_fake/stats")


def relay_service(upstream_url: str) -> Service:
    relay = promptrelay_service(upstream_url)
    relay.env["ANTHROPIC_API_KEY"] = "x"
    return relay


def run_prompts(label: str, url: str, prompts: list[str], concurrency: int) -> Batch:
    """Closed loop: `concurrency` workers take the next prompt as soon as they are free."""
    return _new_loop().run_until_complete(_run(label, url, prompts, concurrency))


async def _run(label: str, url: str, prompts: list[str], concurrency: int) -> Batch:
    import aiohttp

    latencies: list[float] = []
    x_cache: Counter[str] = Counter()
    errors = 0
    queue = iter(prompts)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal errors
            for prompt in queue:
                body = {
                    "model": MODEL,
                    "max_tokens": 64,
                    "messages": [{"role": "user", "content": prompt}],
                }
                sent = time.perf_counter()
                try:
                    async with session.post(
                        f"{url}/v1/messages", json=body, headers=HEADERS
                    ) as response:
                        await response.read()
                        ok = response.status < 300
                        tag = response.headers.get("x-cache", "none")
                except (aiohttp.ClientError, TimeoutError):
                    ok, tag = False, "error"
                if ok:
                    latencies.append(time.perf_counter() - sent)
                    x_cache[tag] += 1
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return Batch(
        label=label,
        requests=len(latencies),
        concurrency=concurrency,
        seconds=elapsed,
        p50_ms=_percentile(latencies, 50) * 1e3,
        p99_ms=_percentile(latencies, 99) * 1e3,
        x_cache=dict(x_cache),
        errors=errors,
    )


def zipf_prompts(distinct: int, total: int, s: float, seed: int, run_id: str) -> list[str]:
    weights = [1.0 / rank**s for rank in range(1, distinct + 1)]
    ranks = random.Random(seed).choices(range(1, distinct + 1), weights=weights, k=total)
    return [f"cache bench zipf {run_id} rank {rank}" for rank in ranks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unique", type=int, default=50, help="prompts in the hit/miss test")
    parser.add_argument("--unique-concurrency", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=1000.0, help="slow fake's latency")
    parser.add_argument("--zipf-requests", type=int, default=10_000)
    parser.add_argument("--zipf-distinct", type=int, default=200)
    parser.add_argument("--zipf-s", type=float, default=1.1)
    parser.add_argument("--zipf-concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    slow_fake, fast_fake = fake_service(args.latency_ms), fake_service(0)
    slow_relay = relay_service(service_url(slow_fake))
    fast_relay = relay_service(service_url(fast_fake))
    with services([slow_fake, fast_fake, slow_relay, fast_relay]):
        prompts = [f"cache bench unique {run_id} n{n}" for n in range(args.unique)]
        url, c = service_url(slow_relay), args.unique_concurrency
        log(f"hit/miss: {len(prompts)} unique prompts at c={c}, upstream {args.latency_ms:g} ms")
        fake_reset(service_url(slow_fake))
        misses = run_prompts("misses (first pass)", url, prompts, c)
        hits = run_prompts("hits (same prompts again)", url, prompts, c)
        slow_calls = _upstream_calls(service_url(slow_fake))

        zipf = zipf_prompts(args.zipf_distinct, args.zipf_requests, args.zipf_s, args.seed, run_id)
        zc = args.zipf_concurrency
        log(f"zipf: {len(zipf)} requests over {len(set(zipf))} prompts at c={zc}")
        fake_reset(service_url(fast_fake))
        zipf_batch = run_prompts("zipf", service_url(fast_relay), zipf, args.zipf_concurrency)
        zipf_calls = _upstream_calls(service_url(fast_fake))

    text = report(misses, hits, slow_calls, zipf_batch, zipf_calls, len(set(zipf)), args)
    data: dict[str, Any] = {
        "machine": machine_lines(sys.argv),
        "args": vars(args),
        "misses": {**asdict(misses), "rps": misses.rps},
        "hits": {**asdict(hits), "rps": hits.rps},
        "hit_miss_upstream_calls": slow_calls,
        "hits_faster_pct": _faster_pct(misses, hits),
        "zipf": {**asdict(zipf_batch), "rps": zipf_batch.rps, "hit_rate": zipf_batch.hit_rate},
        "zipf_distinct_drawn": len(set(zipf)),
        "zipf_upstream_calls": zipf_calls,
    }
    write_outputs(text, data, args.markdown, args.json)


def _upstream_calls(fake_url: str) -> int:
    return int(fake_stats(fake_url).get("by_path", {}).get("/v1/messages", 0))


def _faster_pct(misses: Batch, hits: Batch) -> float:
    return (1 - hits.p50_ms / misses.p50_ms) * 100 if misses.p50_ms else float("nan")


def report(
    misses: Batch,
    hits: Batch,
    slow_calls: int,
    zipf: Batch,
    zipf_calls: int,
    distinct_drawn: int,
    args: argparse.Namespace,
) -> str:
    header = ["phase", "requests", "c", "req/s", "p50 ms", "p99 ms", "x-cache", "errors"]
    rows = [
        [
            b.label,
            f"{b.requests:,}",
            str(b.concurrency),
            f"{b.rps:,.1f}",
            f"{b.p50_ms:.2f}",
            f"{b.p99_ms:.2f}",
            ", ".join(f"{k} {v:,}" for k, v in sorted(b.x_cache.items())),
            str(b.errors),
        ]
        for b in (misses, hits, zipf)
    ]
    faster = _faster_pct(misses, hits)
    p99_faster = (1 - hits.p99_ms / misses.p99_ms) * 100 if misses.p99_ms else float("nan")
    all_hits = hits.x_cache.get("HIT", 0) == hits.requests == args.unique
    lines = [
        "# promptrelay memory cache: hits vs misses, and Zipf hit rate",
        "",
        *(f"- {line}" for line in machine_lines(sys.argv)),
        "- load generator: closed-loop aiohttp client in the bench process; promptrelay with "
        "the memory cache only (REDIS_ENABLED=false), ANTHROPIC_API_KEY=x",
        f"- hit/miss: {args.unique} unique prompts at c={args.unique_concurrency} against a "
        f"fake upstream with {args.latency_ms:g} ms latency, then the same prompts again",
        f"- zipf: {args.zipf_requests:,} requests over {args.zipf_distinct} prompts "
        f"(weight 1/rank^{args.zipf_s:g}, random.choices seed {args.seed}; {distinct_drawn} "
        f"distinct drawn), instant fake upstream, c={args.zipf_concurrency}",
        "",
        markdown_table(header, rows),
        "",
        f"- Hits are {faster:.2f}% faster than misses at p50 ({hits.p50_ms:.2f} ms vs "
        f"{misses.p50_ms:.2f} ms; {p99_faster:.2f}% at p99) — target ≥ 99%: "
        f"{'met' if faster >= 99 else 'NOT met'}.",
        f"- Second pass: {hits.x_cache.get('HIT', 0)}/{hits.requests} answered with "
        f"`x-cache: HIT`{'' if all_hits else ' (WARNING: not all hits)'}; the 1 s upstream "
        f"saw {slow_calls} /v1/messages calls over both passes.",
        f"- Zipf hit rate (x-cache HIT / answered): {zipf.hit_rate * 100:.2f}% — target ≥ 97%: "
        f"{'met' if zipf.hit_rate >= 0.97 else 'NOT met'}; {zipf.rps:,.0f} req/s; upstream "
        f"/v1/messages calls: {zipf_calls} for {distinct_drawn} distinct prompts drawn.",
    ]
    if zipf_calls > distinct_drawn:
        lines.append(
            f"- {zipf_calls - distinct_drawn} upstream calls beyond one per distinct prompt: "
            "concurrent first requests for the same prompt, each a miss."
        )
    zipf_misses = zipf.x_cache.get("MISS", 0)
    if zipf_misses > zipf_calls:
        lines.append(
            f"- {zipf_misses} answers said MISS but the upstream saw only {zipf_calls} calls: "
            f"{zipf_misses - zipf_calls} concurrent requests for a prompt already in flight "
            "shared its upstream call (labelled MISS, yet no extra upstream call)."
        )
    if misses.errors or hits.errors or zipf.errors:
        lines.append("- WARNING: some requests failed (see the errors column).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
