"""Async batch jobs on the 6-node cluster: made on A, polled on C and B; a failover is a 503."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from redis.crc import key_slot

from promptrelay.resilience.backoff import Backoff
from tests.batch_jobs_client import poll, results_fetches, submit
from tests.fixtures_topologies import RedisClusterSet
from tests.scaleout.helpers import CLIENT_KEY, all_up, cluster_settings, until

HEADERS = {"x-api-key": CLIENT_KEY}


def _three(gateway_factory: Any, cluster: RedisClusterSet, fake_url: str) -> list[str]:
    gateways = [gateway_factory(**cluster_settings(cluster, fake_url)) for _ in range(3)]
    return [gateway.url for gateway in gateways]


def _record_key(job_id: str) -> str:
    return f"promptrelay:batch:{{{job_id}}}"


async def test_an_async_batch_created_on_a_is_polled_to_completion_on_c_and_on_b(
    gateway_factory, fake_upstream, redis_cluster
):
    fake_upstream.configure(batch_processing_ms=300)
    a, b, c = _three(gateway_factory, redis_cluster, fake_upstream.url)
    items = [{"prompt": f"cluster batch {index}"} for index in range(3)]
    async with aiohttp.ClientSession() as session:
        assert await all_up(session, [a, b, c])
        status, job = await submit(session, a, items, HEADERS)
        assert status == 202 and job["status"] == "in_progress", job
        seen, on_c = await poll(session, c, job["id"], HEADERS)
        _, on_b = await poll(session, b, job["id"], HEADERS)
    assert seen[0] == "in_progress"
    assert on_c["summary"]["succeeded"] == 3 and on_b == on_c
    assert results_fetches(fake_upstream.stats()) == 1  # C fetched them, B read C's record
    where = redis_cluster.keys_by_primary("promptrelay:batch:*")
    assert sum(len(keys) for keys in where.values()) == 1  # one record, no lock left


async def test_a_poll_while_the_jobs_slot_fails_over_answers_503_then_the_job_ends(
    gateway_factory, fake_upstream, redis_cluster
):
    fake_upstream.configure(batch_processing_ms=500)
    urls = _three(gateway_factory, redis_cluster, fake_upstream.url)
    a, b, _ = urls
    async with aiohttp.ClientSession() as session:
        assert await all_up(session, urls)
        _, job = await submit(session, a, [{"prompt": "through a failover"}], HEADERS)
        key = _record_key(job["id"])

        async def replicated() -> bool:  # on its primary and on that primary's replica
            return [k for k, _ in redis_cluster.dump_all()].count(key) == 2

        assert await until(replicated, 5.0)
        victim = redis_cluster.primary_for_slot(key_slot(key.encode()))
        redis_cluster.kill(victim)
        answers: list[tuple[int, str | None]] = []
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            async with session.get(f"{b}/api/batches/{job['id']}", headers=HEADERS) as r:
                answers.append((r.status, r.headers.get("retry-after")))
                view = await r.json()
            if r.status == 200 and view["status"] == "ended":
                break
            await asyncio.sleep(0.1)
        # Every instance back up before they stop (a probe cut by shutdown leaves sockets);
        # a tier that flapped during the failover probes at most every Backoff().cap s.
        assert await all_up(session, urls, Backoff().cap + 15.0)
    assert answers[0] == (503, "2"), answers[:3]
    assert {status for status, _ in answers} == {503, 200}, answers
    assert view["status"] == "ended" and view["results"][0]["ok"] is True
