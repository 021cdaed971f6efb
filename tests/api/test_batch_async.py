"""mode "async": one Anthropic Message Batch, a job id, polling, results stored as hits."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


def _live(gateway_factory, fake_upstream, **overrides: Any):
    return gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        upstream_retries=0,
        **overrides,
    )


async def _poll(
    session: aiohttp.ClientSession, url: str, job_id: str, headers: dict[str, str] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Poll until ended; returns the statuses seen and the last view."""
    seen: list[str] = []
    for _ in range(100):
        async with session.get(f"{url}/api/batches/{job_id}", headers=headers or {}) as r:
            assert r.status == 200, await r.text()
            view = await r.json()
        seen.append(view["status"])
        if view["status"] == "ended":
            return seen, view
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never ended: {seen[-3:]}")


async def test_async_round_trip_and_later_generate_is_a_hit(gateway_factory, fake_upstream):
    fake_upstream.configure(batch_processing_ms=300)
    gateway = _live(gateway_factory, fake_upstream)
    requests: list[Any] = [
        {"prompt": "summarise A", "max_tokens": 40},
        {"prompt": "summarise B", "system": "terse"},
        {"prompt": 7},  # invalid: its own error, never sent
    ]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway.url}/api/generate/batch", json={"requests": requests, "mode": "async"}
        ) as r:
            assert r.status == 202
            job = await r.json()
        assert job["status"] == "in_progress" and job["id"].startswith("prbatch_")
        assert job["upstream_batch_id"].startswith("msgbatch_")
        assert "results" not in job
        seen, view = await _poll(session, gateway.url, job["id"])
        async with session.post(
            f"{gateway.url}/api/generate", json={"prompt": "summarise B", "system": "terse"}
        ) as r:
            later_cache, later = r.headers["x-cache"], await r.json()
        async with session.get(f"{gateway.url}/api/batches/{job['id']}") as r:
            again = await r.json()
    assert seen[0] == "in_progress" and seen[-1] == "ended"
    assert [item["ok"] for item in view["results"]] == [True, True, False]
    assert view["results"][2]["error"]["type"] == "invalid_request_error"
    assert view["results"][0]["result"]["text"].startswith("Echo: summarise A")
    assert view["summary"] == {**view["summary"], "total": 3, "succeeded": 2, "failed": 1}
    assert view["request_counts"]["succeeded"] == 2
    assert later_cache == "HIT" and later["cached"] is True
    assert later["text"] == view["results"][1]["result"]["text"]
    assert again == view  # an ended job is answered from memory
    stats = fake_upstream.stats()
    assert stats["by_path"].get("/v1/messages", 0) == 0  # everything went through the batch
    assert stats["by_path"]["/v1/messages/batches"] == 1
    assert stats["api_keys_seen"] == ["gw"]


async def test_cached_items_are_not_sent_again(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/api/generate", json={"prompt": "known"}) as r:
            assert r.status == 200
        async with session.post(
            f"{gateway.url}/api/generate/batch",
            json={"requests": [{"prompt": "known"}], "mode": "async"},
        ) as r:
            job = await r.json()
    assert job["status"] == "ended" and job["upstream_batch_id"] is None
    assert job["results"][0]["result"]["cached"] is True and job["summary"]["cached"] == 1
    assert "/v1/messages/batches" not in fake_upstream.stats()["by_path"]


async def test_jobs_are_private_to_their_client_key(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream, promptrelay_api_keys="alice,bob")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway.url}/api/generate/batch",
            json={"requests": [{"prompt": "mine"}], "mode": "async"},
            headers={"x-api-key": "alice"},
        ) as r:
            job = await r.json()
        async with session.get(
            f"{gateway.url}/api/batches/{job['id']}", headers={"x-api-key": "bob"}
        ) as r:
            assert r.status == 404
        async with session.get(f"{gateway.url}/api/batches/{job['id']}") as r:
            assert r.status == 401
        _, view = await _poll(session, gateway.url, job["id"], {"x-api-key": "alice"})
        async with session.get(f"{gateway.url}/api/batches/prbatch_nope") as r:
            assert r.status == 401
    assert view["results"][0]["ok"]


async def test_the_oldest_job_is_forgotten_beyond_the_bound(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream, batch_jobs_max=1)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway.url}/api/generate/batch",
            json={"requests": [{"prompt": "a"}], "mode": "async"},
        ) as r:
            first = await r.json()
        async with session.post(
            f"{gateway.url}/api/generate/batch",
            json={"requests": [{"prompt": "b"}], "mode": "async"},
        ) as r:
            assert r.status == 202
        async with session.get(f"{gateway.url}/api/batches/{first['id']}") as r:
            assert r.status == 404  # BATCH_JOBS_MAX=1
            assert "at most 1" in (await r.json())["error"]["message"]


async def test_upstream_refusal_is_passed_on(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    fake_upstream.configure(fail_next=1, fail_next_status=529)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gateway.url}/api/generate/batch",
            json={"requests": [{"prompt": "a"}], "mode": "async"},
        ) as r:
            status, body = r.status, await r.json()
    assert status == 529
    assert body["error"]["type"] == "overloaded_error"
    assert body["error"]["message"].startswith("Message Batches: ")
