"""Three promptrelay instances on one Redis Cluster: shared hit ratio and hit throughput.

Starts, on free loopback ports, a Redis Cluster of 3 primaries + 3 replicas (the test
suite's fixture, from /usr/bin/redis-server), the fake Anthropic API and three
`promptrelay serve` processes on the cluster (REDIS_CLUSTER_NODES). Then, with a
closed-loop aiohttp client in this process:

1. shared hit ratio: K prompts through instance A (all misses), then the same K through
   B and through C: the share answered `x-cache: HIT` on B and C, and the upstream calls.
2. hit throughput: the K prompts over all three instances together at concurrency C for
   S seconds, against the same load on instance A alone in the same run (the ratio is
   what the shared tier buys a cluster of instances on this machine; on 2 cores the
   three processes share the cores the one had).

Everything is stopped by PID on the way out.

    .venv/bin/python bench/scaleout.py [--seconds 10] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from typing import Any

import aiohttp

from benchkit import (
    BIN_DIR,
    REPO_DIR,
    Service,
    _new_loop,
    fake_stats,
    fake_upstream,
    free_port,
    log,
    machine_lines,
    markdown_table,
    service_url,
    services,
    write_outputs,
)

sys.path.insert(0, str(REPO_DIR))  # the cluster is the test suite's own fixture
from tests.fixtures_topologies import RedisClusterSet  # needs the path above


def gateway(name: str, fake_url: str, cluster: RedisClusterSet) -> Service:
    port = free_port()
    env = {
        "PORT": str(port),
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": fake_url,
        "REDIS_ENABLED": "true",
        "REDIS_CLUSTER_NODES": cluster.startup_nodes,
        "REDIS_PASSWORD": cluster.password,
        "LOG_LEVEL": "warning",
    }
    argv = [str(BIN_DIR / "promptrelay"), "serve"]
    return Service(name, argv, f"http://127.0.0.1:{port}/api/health", env={**os.environ, **env})


def _body(prompt: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    }


async def _labels(session: aiohttp.ClientSession, url: str, prompts: list[str]) -> list[str]:
    labels = []
    for prompt in prompts:
        async with session.post(f"{url}/v1/messages", json=_body(prompt)) as response:
            await response.read()
            labels.append(response.headers.get("x-cache", "") if response.status == 200 else "")
    return labels


async def _throughput(
    session: aiohttp.ClientSession,
    urls: list[str],
    prompts: list[str],
    workers: int,
    seconds: float,
) -> dict[str, float]:
    served, failed = 0, 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal served, failed
        for turn in itertools.count():
            if time.perf_counter() >= deadline:
                return
            url = urls[(index + turn) % len(urls)]
            body = _body(prompts[(index * 31 + turn) % len(prompts)])
            async with session.post(f"{url}/v1/messages", json=body) as response:
                await response.read()
                hit = response.status == 200 and response.headers.get("x-cache") == "HIT"
                served, failed = served + hit, failed + (not hit)

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(workers)))
    elapsed = time.perf_counter() - started
    return {"hits_per_s": served / elapsed, "not_hits": failed, "seconds": elapsed}


async def measure(urls: list[str], fake_url: str, args: argparse.Namespace) -> dict[str, Any]:
    prompts = [f"scale-out bench prompt {index}" for index in range(args.prompts)]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        first = await _labels(session, urls[0], prompts)
        await asyncio.sleep(1.0)  # write-behind reaches the cluster
        others = await _labels(session, urls[1], prompts) + await _labels(session, urls[2], prompts)
        upstream_calls = fake_stats(fake_url)["by_path"].get("/v1/messages", 0)
        one = await _throughput(session, urls[:1], prompts, args.concurrency, args.seconds)
        three = await _throughput(session, urls, prompts, args.concurrency, args.seconds)
    return {
        "prompts": len(prompts),
        "misses_on_a": first.count("MISS"),
        "hit_ratio_on_b_and_c": others.count("HIT") / len(others),
        "upstream_calls": upstream_calls,
        "one_instance": one,
        "three_instances": three,
        "ratio": three["hits_per_s"] / one["hits_per_s"] if one["hits_per_s"] else 0.0,
    }


def report(result: dict[str, Any], argv: list[str]) -> str:
    one, three = result["one_instance"], result["three_instances"]
    rows = [
        ["shared hit ratio on B and C", f"{result['hit_ratio_on_b_and_c']:.3f}"],
        ["upstream calls for the 3 x K requests", str(result["upstream_calls"])],
        ["hits/s, instance A alone", f"{one['hits_per_s']:.0f}"],
        ["hits/s, three instances together", f"{three['hits_per_s']:.0f}"],
        ["ratio three / one", f"{result['ratio']:.2f}"],
        ["non-hits during the throughput phases", str(one["not_hits"] + three["not_hits"])],
    ]
    lines = ["# Scale-out: three instances on a Redis Cluster", "", *machine_lines(argv), ""]
    lines += [
        f"K = {result['prompts']} prompts, first sent through A ({result['misses_on_a']} misses).",
        "",
    ]
    return "\n".join([*lines, markdown_table(["measure", "value"], rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    cluster = RedisClusterSet()
    try:
        log("starting a Redis Cluster of 3 primaries + 3 replicas")
        cluster.start()
        fake = fake_upstream()
        with services([fake]):
            fake_url = service_url(fake)
            stack = [gateway(f"promptrelay {name}", fake_url, cluster) for name in "ABC"]
            with services(stack) as started:
                urls = [service_url(service) for service in started]
                result = _new_loop().run_until_complete(measure(urls, fake_url, args))
    finally:
        cluster.close()
    write_outputs(report(result, sys.argv), result, args.markdown, args.json)


if __name__ == "__main__":
    main()
