"""mode "async": one Anthropic Message Batch, a job id, polling, results stored as hits."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from promptrelay.core.batch import BatchContext, prepare_item
from promptrelay.core.pipeline import Prepared


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


# -- memory bound (Redis off): jobs keep little, all together at most BATCH_JOBS_MAX_BYTES --


async def _submit(
    session: aiohttp.ClientSession, url: str, requests: list[Any]
) -> tuple[int, dict[str, Any]]:
    body = {"requests": requests, "mode": "async"}
    async with session.post(f"{url}/api/generate/batch", json=body) as r:
        return r.status, await r.json()


async def _job_status(session: aiohttp.ClientSession, url: str, job_id: str) -> int:
    async with session.get(f"{url}/api/batches/{job_id}") as r:
        return r.status


async def test_waiting_jobs_keep_no_bodies(gateway_factory, fake_upstream):
    fake_upstream.configure(batch_processing_ms=60_000)  # items stay waiting while we look
    # Each ~3 KB prompt waits by its cache key only: ten such jobs fit in 8000 bytes.
    gateway = _live(gateway_factory, fake_upstream, batch_jobs_max_bytes=8000)
    jobs = []
    async with aiohttp.ClientSession() as session:
        for index in range(10):
            status, job = await _submit(session, gateway.url, [{"prompt": f"{index}" * 3000}])
            assert status == 202 and job["status"] == "in_progress"
            jobs.append(job["id"])
        kept = [await _job_status(session, gateway.url, j) for j in jobs]
    assert kept == [200] * 10


async def test_jobs_over_the_byte_budget_forget_the_oldest(gateway_factory, fake_upstream):
    fake_upstream.configure(batch_processing_ms=50)
    # Each job below ends with one ~2.4 KB answer (the prompt echoed): two fit, three do not.
    gateway = _live(gateway_factory, fake_upstream, batch_jobs_max_bytes=5500)
    jobs = []
    async with aiohttp.ClientSession() as session:
        for letter in "abc":
            status, job = await _submit(session, gateway.url, [{"prompt": letter * 3000}])
            assert status == 202 and job["status"] == "in_progress"
            jobs.append(job["id"])
            _, view = await _poll(session, gateway.url, job["id"])
            assert len(view["results"][0]["result"]["text"]) > 2000
            if letter == "b":  # a and b together are under the budget: both kept
                assert [await _job_status(session, gateway.url, j) for j in jobs] == [200, 200]
        kept = [await _job_status(session, gateway.url, j) for j in jobs]
        async with session.get(f"{gateway.url}/api/batches/{jobs[0]}") as r:
            gone = (await r.json())["error"]["message"]
        async with session.get(f"{gateway.url}/api/batches/stats") as r:
            stats = await r.json()
    assert kept == [404, 200, 200]  # the oldest went first
    assert "5500 bytes" in gone and "BATCH_JOBS_MAX_BYTES" in gone
    assert stats["jobs"] == 2


async def test_a_slimmed_job_still_ends_with_its_results_and_hits(
    gateway_factory, fake_upstream, tmp_path
):
    fake_upstream.configure(batch_processing_ms=200)
    gateway = _live(gateway_factory, fake_upstream, database_url=f"sqlite:///{tmp_path}/t.db")
    template = {"body": "Greet {{ who }}", "variables": ["who"], "system": "warm"}
    greet = {"template": "greet", "variables": {"who": "Ada"}}
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{gateway.url}/api/templates/greet", json=template) as r:
            assert r.status in (200, 201), await r.text()
        status, job = await _submit(
            session, gateway.url, [greet, {"prompt": "plain", "cache": False}]
        )
        assert status == 202
        _, view = await _poll(session, gateway.url, job["id"])
        async with session.post(f"{gateway.url}/api/generate", json=greet) as r:
            greet_cache, later = r.headers["x-cache"], await r.json()
        async with session.post(f"{gateway.url}/api/generate", json={"prompt": "plain"}) as r:
            plain_cache = r.headers["x-cache"]
    first, second = view["results"]
    assert first["ok"] and second["ok"]
    assert first["result"]["template"] == "greet" and first["result"]["template_version"] == 1
    assert first["result"]["text"].startswith("Echo: Greet Ada")
    assert "template" not in second["result"]
    assert greet_cache == "HIT" and later["text"] == first["result"]["text"]
    assert plain_cache == "MISS"  # "cache": false was not stored by the batch either


# -- one item's failure is its own ----------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


def _deepest_item() -> dict[str, Any]:
    """The most deeply nested item orjson still encodes: valid on its own, too deep once
    wrapped in a Message Batch entry ({"custom_id", "params": ...})."""
    depth = 1
    while True:
        try:
            orjson.dumps({"messages": [{"role": "user", "content": _nested(depth + 1)}]})
        except TypeError:
            return {"messages": [{"role": "user", "content": _nested(depth)}]}
        depth += 1


async def test_an_item_too_deep_for_the_message_batch_fails_alone(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    requests = [{"prompt": "first"}, _deepest_item(), {"prompt": "last"}]
    async with aiohttp.ClientSession() as session:
        status, job = await _submit(session, gateway.url, requests)
        assert status == 202, job
        _, view = await _poll(session, gateway.url, job["id"])
    assert [item["ok"] for item in view["results"]] == [True, False, True]
    error = view["results"][1]["error"]
    assert error["type"] == "invalid_request_error" and error["status"] == 400
    assert error["message"].startswith("requests.1: cannot be sent in a Message Batch")
    assert view["request_counts"]["succeeded"] == 2  # the other two were submitted


async def test_a_bug_preparing_one_item_costs_that_item_only(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    runtime = gateway.app.runtime
    assert runtime is not None

    async def faulty(item: Any, context: BatchContext) -> Prepared:
        if item.get("prompt") == "boom":
            raise RuntimeError("a bug in preparation")
        return await prepare_item(item, context)

    runtime.batch_jobs.prepare_item = faulty
    requests = [{"prompt": "one"}, {"prompt": "boom"}, {"prompt": "three"}]
    async with aiohttp.ClientSession() as session:
        status, job = await _submit(session, gateway.url, requests)
        assert status == 202, job
        _, view = await _poll(session, gateway.url, job["id"])
    assert [item["ok"] for item in view["results"]] == [True, False, True]
    assert view["results"][1]["error"] == {
        "type": "api_error",
        "message": "internal error on this item",
    }
    assert view["request_counts"]["succeeded"] == 2
    assert fake_upstream.stats()["by_path"]["/v1/messages/batches"] == 1
