"""POST /api/generate/batch and GET /api/batches/{id} over HTTP, against the fake upstream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from promptrelay.core.events import BatchFlushed, Event


def _live(gateway_factory, fake_upstream, **overrides: Any):
    settings: dict[str, Any] = {
        "anthropic_api_key": "gw",
        "anthropic_base_url": fake_upstream.url,
        "upstream_retries": 0,
        **overrides,
    }
    return gateway_factory(**settings)


def _flushes(gateway) -> list[BatchFlushed]:
    """Subscribe to the running app's event bus; the list fills as groups leave."""
    seen: list[BatchFlushed] = []

    def listen(event: Event) -> None:
        if isinstance(event, BatchFlushed):
            seen.append(event)

    assert gateway.app.runtime is not None
    gateway.app.runtime.events.subscribe(listen)
    return seen


async def _batch(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/api/generate/batch", json=body, headers=headers) as response:
        return response.status, await response.json()


def _messages_calls(fake_upstream) -> int:
    return int(fake_upstream.stats()["by_path"].get("/v1/messages", 0))


# -- micro-batching --------------------------------------------------------------------


async def test_ten_concurrent_items_within_the_window_leave_as_one_group(
    gateway_factory, fake_upstream
):
    # BATCH_MAX_SIZE 10; the window is widened from 100 to 500 ms so that ten HTTP calls
    # reach the batcher inside it even on a busy 2-core machine. The 100 ms default itself
    # is the window policy's, proven on a fake clock in tests/core/test_batcher.py.
    gateway = _live(gateway_factory, fake_upstream, batch_window_ms=500)
    flushed = _flushes(gateway)
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(
                _batch(session, gateway.url, {"requests": [{"prompt": f"item {i}"}]})
                for i in range(10)
            )
        )
        async with session.get(f"{gateway.url}/api/batches/stats") as response:
            stats = await response.json()
    assert [status for status, _ in answers] == [200] * 10
    assert all(body["results"][0]["ok"] for _, body in answers)
    assert [(e.model, e.size) for e in flushed] == [("claude-sonnet-4-6", 10)]
    assert flushed[0].waited_ms < 500  # left because it was full, not by its timer
    assert (stats["groups"], stats["max_size"], stats["sizes"]) == (1, 10, {"10": 1})
    assert _messages_calls(fake_upstream) == 10


async def test_single_generate_is_never_held_by_the_batch_window(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream, batch_window_ms=3000)
    flushed = _flushes(gateway)
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(
            _batch(session, gateway.url, {"requests": [{"prompt": "waits in a window"}]})
        )
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        async with session.post(f"{gateway.url}/api/generate", json={"prompt": "now"}) as r:
            assert r.status == 200
        async with session.post(
            f"{gateway.url}/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        ) as r:
            assert r.status == 200
        elapsed = time.perf_counter() - started
        assert not pending.done() and flushed == []  # the batch item still waits
        status, body = await pending
    assert elapsed < 1.5  # generous; the window is 3 s
    assert status == 200 and body["results"][0]["ok"]
    assert [(e.size, e.waited_ms >= 2900) for e in flushed] == [(1, True)]


async def test_three_identical_items_cost_one_upstream_call(gateway_factory, fake_upstream):
    fake_upstream.configure(latency_ms=100)
    gateway = _live(gateway_factory, fake_upstream)
    same = {"prompt": "same question", "max_tokens": 50}
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": [same, same, same]})
    assert status == 200
    texts = {item["result"]["text"] for item in body["results"]}
    assert len(texts) == 1 and all(item["ok"] for item in body["results"])
    assert _messages_calls(fake_upstream) == 1
    assert body["summary"]["total"] == 3 and body["summary"]["succeeded"] == 3


async def test_hundred_items_at_concurrency_ten_are_paced_and_parallel(
    gateway_factory, fake_upstream
):
    fake_upstream.configure(latency_ms=200)
    gateway = _live(gateway_factory, fake_upstream)
    fake_upstream.reset()
    requests = [{"prompt": f"unique item {i}"} for i in range(100)]
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": requests, "concurrency": 10})
    elapsed = time.perf_counter() - started
    stats = fake_upstream.stats()
    assert status == 200
    assert body["summary"]["succeeded"] == 100 and body["summary"]["failed"] == 0
    assert body["summary"]["concurrency"] == 10
    assert [item["index"] for item in body["results"]] == list(range(100))
    assert stats["by_path"]["/v1/messages"] == 100
    assert stats["max_in_flight"] <= 10  # never more than `concurrency` at the upstream
    assert stats["max_in_flight"] >= 5  # and really in parallel
    assert elapsed < 6.0  # ~10 x 200 ms; one at a time would be 20 s


async def test_five_failing_items_do_not_fail_the_other_ninety_five(gateway_factory, fake_upstream):
    # the breaker must not open on purpose-made failures for this test
    gateway = _live(gateway_factory, fake_upstream, circuit_failure_threshold=1000)
    fake_upstream.configure(fail_next=5, fail_next_status=500)
    requests = [{"prompt": f"item {i}"} for i in range(100)]
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": requests, "concurrency": 10})
    assert status == 200
    failed = [item for item in body["results"] if not item["ok"]]
    assert len(failed) == 5
    assert all(item["error"]["status"] == 500 for item in failed)
    assert all(item["error"]["type"] == "api_error" for item in failed)
    assert body["summary"] == {**body["summary"], "total": 100, "succeeded": 95, "failed": 5}
    ok = [item for item in body["results"] if item["ok"]]
    assert all(set(item["result"]) >= {"id", "text", "usage", "cached"} for item in ok)


async def test_a_200_that_is_not_json_fails_only_its_item(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    fake_upstream.configure(garbage_next=1)  # one 200 text/html page, then real answers
    requests = [{"prompt": f"item {i}"} for i in range(3)]
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": requests})
        failed = [item for item in body["results"] if not item["ok"]]
        assert len(failed) == 1, body
        again = requests[failed[0]["index"]]
        async with session.post(f"{gateway.url}/api/generate", json=again) as r:
            retry_cache, retry = r.headers["x-cache"], await r.json()
    assert status == 200
    assert failed[0]["error"] == {
        "type": "api_error",
        "status": 502,
        "message": "the upstream answered 200 but its body is not a JSON object",
    }
    assert body["summary"] == {**body["summary"], "total": 3, "succeeded": 2, "failed": 1}
    assert retry_cache == "MISS" and retry["text"]  # the page was never cached
    assert _messages_calls(fake_upstream) == 4


async def test_items_have_generates_shape_and_hits_are_counted(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/api/generate", json={"prompt": "known"}) as r:
            single = await r.json()
        status, body = await _batch(
            session,
            gateway.url,
            {"requests": [{"prompt": "known"}, {"prompt": "new", "system": "be brief"}]},
        )
    assert status == 200
    first, second = body["results"]
    assert set(first["result"]) == set(single)
    assert first["result"]["text"] == single["text"] and first["result"]["cached"] is True
    assert second["result"]["cached"] is False
    assert body["summary"]["cached"] == 1


async def test_bad_items_are_their_own_errors(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream)
    requests: list[Any] = [
        {"prompt": "fine"},
        {"prompt": 42},
        "not an object",
        {"prompt": "a", "messages": [{"role": "user", "content": "b"}]},
        {"prompt": "x", "unknown_field": 1},
        {"prompt": "also fine", "max_tokens": 20},
    ]
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": requests})
    assert status == 200
    assert [item["ok"] for item in body["results"]] == [True, False, False, False, False, True]
    errors = [item["error"] for item in body["results"] if not item["ok"]]
    assert all(e["type"] == "invalid_request_error" and e["status"] == 400 for e in errors)
    assert errors[0]["message"] == "requests.1: prompt: must be a non-empty string"
    assert "unknown_field" in errors[3]["message"]
    assert _messages_calls(fake_upstream) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"requests": []}, "requests: required"),
        ({"requests": [{"prompt": "p"}] * 101}, "at most 100 per call (BATCH_MAX_ITEMS)"),
        ({"requests": [{"prompt": "p"}], "mode": "later"}, 'mode: must be "sync" or "async"'),
        ({"requests": [{"prompt": "p"}], "concurrency": 0}, "concurrency: must be an integer"),
        ({"requests": [{"prompt": "p"}], "concurrency": True}, "concurrency: must be an integer"),
        ({"requests": [{"prompt": "p"}], "extra": 1}, "extra: unknown field"),
        ([1, 2], "request body must be a JSON object"),
    ],
)
async def test_bad_batch_calls_are_400_in_the_error_shape(
    gateway_factory, fake_upstream, body, message
):
    gateway = _live(gateway_factory, fake_upstream)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/api/generate/batch", json=body) as response:
            status, answer = response.status, await response.json()
    assert status == 400
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert message in answer["error"]["message"]
    assert _messages_calls(fake_upstream) == 0


async def test_batch_route_is_not_the_hot_generate_route(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream, max_body_bytes=2000)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/api/generate/batch") as response:
            assert response.status == 405
            assert (await response.json())["type"] == "error"
        big = {"requests": [{"prompt": "x" * 3000}]}
        async with session.post(f"{gateway.url}/api/generate/batch", json=big) as response:
            assert response.status == 413
        async with session.post(f"{gateway.url}/api/generate/batch", data=b"{nope") as response:
            assert response.status == 400
            assert "not valid JSON" in (await response.json())["error"]["message"]


async def test_concurrency_is_capped_by_config(gateway_factory, fake_upstream):
    fake_upstream.configure(latency_ms=100)
    gateway = _live(gateway_factory, fake_upstream, batch_max_concurrency=3)
    fake_upstream.reset()
    requests = [{"prompt": f"cap {i}"} for i in range(12)]
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": requests, "concurrency": 50})
    assert status == 200 and body["summary"]["concurrency"] == 3
    assert fake_upstream.stats()["max_in_flight"] <= 3


async def test_client_keys_guard_the_batch_routes(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream, promptrelay_api_keys="k1,k2")
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": [{"prompt": "p"}]})
        assert status == 401 and body["error"]["type"] == "authentication_error"
        status, body = await _batch(
            session, gateway.url, {"requests": [{"prompt": "p"}]}, **{"x-api-key": "k1"}
        )
        assert status == 200 and body["results"][0]["ok"]
    assert fake_upstream.stats()["api_keys_seen"] == ["gw"]  # the client key never goes up


async def test_offline_sync_batch_works_and_async_says_why_not(gateway_factory):
    gateway = gateway_factory()  # no key anywhere: the offline provider answers
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": [{"prompt": "p"}]})
        assert status == 200 and body["results"][0]["result"]["offline"] is True
        status, body = await _batch(
            session, gateway.url, {"requests": [{"prompt": "p"}], "mode": "async"}
        )
    assert status == 501
    assert "async" in body["error"]["message"] and "sync" in body["error"]["message"]


async def test_an_open_breaker_fails_items_fast_not_the_call(gateway_factory, fake_upstream):
    gateway = _live(gateway_factory, fake_upstream, circuit_failure_threshold=1)
    fake_upstream.configure(fail_next=1, fail_next_status=500)
    requests = [{"prompt": f"breaker {i}"} for i in range(4)]
    async with aiohttp.ClientSession() as session:
        status, body = await _batch(session, gateway.url, {"requests": requests, "concurrency": 1})
    assert status == 200
    errors = [item["error"] for item in body["results"]]
    assert errors[0]["status"] == 500
    assert [e["status"] for e in errors[1:]] == [503, 503, 503]
    assert all(e["type"] == "overloaded_error" for e in errors[1:])
    assert _messages_calls(fake_upstream) == 1  # the open breaker spared the upstream
