"""The cache on the request path, end to end over HTTP against the fake upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anthropic
import pytest


def _body(text: str = "cache me", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


@pytest.fixture
def live(gateway_factory, fake_upstream):
    return gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, upstream_retries=0
    )


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(f"{url}/v1/messages", json=body, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.read()


async def test_second_identical_request_is_a_hit(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        first = await _post(session, live.url, _body())
        # key order and spelling of the JSON do not matter; metadata does not either
        reordered = {
            "messages": _body()["messages"],
            "max_tokens": 64,
            "model": "claude-sonnet-4-6",
        }
        second = await _post(session, live.url, {**reordered, "metadata": {"user_id": "u"}})
    assert first[1]["x-cache"] == "MISS"
    assert second[1]["x-cache"] == "HIT"
    assert second[2] == first[2]
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1


async def test_cache_control_and_generate_opt_out(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        store_only = await _post(session, live.url, _body(), {"cache-control": "no-cache"})
        hit = await _post(session, live.url, _body())
        bypass = await _post(session, live.url, _body("other"), {"cache-control": "no-store"})
        after_bypass = await _post(session, live.url, _body("other"))
        generate = await session.post(
            f"{live.url}/api/generate", json={"prompt": "cache me", "cache": False}
        )
        generated = await generate.json()
    assert store_only[1]["x-cache"] == "MISS"
    assert hit[1]["x-cache"] == "HIT"
    assert bypass[1]["x-cache"] == "BYPASS"
    assert after_bypass[1]["x-cache"] == "MISS"
    assert generate.headers["x-cache"] == "BYPASS"
    assert generated["cached"] is False


async def test_generate_reports_cached_in_the_body(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        first = await (await session.post(f"{live.url}/api/generate", json={"prompt": "p"})).json()
        second = await (await session.post(f"{live.url}/api/generate", json={"prompt": "p"})).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["text"] == second["text"]


async def test_tenants_do_not_share_answers(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        promptrelay_api_keys="tenant-a,tenant-b",
    )
    async with aiohttp.ClientSession() as session:
        a = await _post(session, gateway.url, _body(), {"x-api-key": "tenant-a"})
        b = await _post(session, gateway.url, _body(), {"x-api-key": "tenant-b"})
        a_again = await _post(session, gateway.url, _body(), {"x-api-key": "tenant-a"})
    assert [a[1]["x-cache"], b[1]["x-cache"], a_again[1]["x-cache"]] == ["MISS", "MISS", "HIT"]


async def test_errors_are_never_cached(live, fake_upstream):
    fake_upstream.configure(fail_next=1, fail_next_status=500)
    async with aiohttp.ClientSession() as session:
        failed = await _post(session, live.url, _body())
        retried = await _post(session, live.url, _body())
    assert failed[0] == 500
    assert retried[0] == 200
    assert retried[1]["x-cache"] == "MISS"


def test_cached_answer_replays_through_the_sdk_stream(live, fake_upstream):
    client = anthropic.Anthropic(base_url=live.url, api_key="x", max_retries=0)
    kwargs: Any = _body("a longer question so the replay has several deltas " * 3)
    created = client.messages.create(**kwargs)
    deltas: list[str] = []
    with client.messages.stream(**kwargs) as stream:
        deltas.extend(stream.text_stream)
    block = created.content[0]
    assert block.type == "text"
    assert "".join(deltas) == block.text
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1
    client.close()


async def test_streamed_miss_is_stored_and_serves_json(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        streamed = await _post(session, live.url, _body(stream=True))
        as_json = await _post(session, live.url, _body())
    assert b"message_stop" in streamed[2]
    assert as_json[1]["x-cache"] == "HIT"
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1


async def test_errored_and_abandoned_streams_are_not_stored(live, fake_upstream):
    fake_upstream.configure(stream_chunks=6, stream_error_after=2)
    async with aiohttp.ClientSession() as session:
        errored = await _post(session, live.url, _body("e", stream=True))
        assert b"event: error" in errored[2]
        fake_upstream.configure(stream_error_after=None, chunk_interval_ms=100)
        async with session.post(f"{live.url}/v1/messages", json=_body("a", stream=True)) as r:
            async for line in r.content:
                if b"text_delta" in line:
                    break  # leave mid-stream
        await asyncio.sleep(0.8)
        fake_upstream.configure(chunk_interval_ms=0)
        again_e = await _post(session, live.url, _body("e"))
        again_a = await _post(session, live.url, _body("a"))
    assert again_e[1]["x-cache"] == "MISS"
    assert again_a[1]["x-cache"] == "MISS"


async def test_identical_concurrent_misses_cost_one_upstream_call(live, fake_upstream):
    # Long enough that all 100 are sent before the one answer comes back, even on a
    # busy machine (at 300 ms a straggler once arrived after it and was a HIT).
    fake_upstream.configure(latency_ms=1000)
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_post(session, live.url, _body("burst")) for _ in range(100))
        )
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, _, body in results}) == 1
    assert sum(1 for _, headers, _ in results if headers.get("x-coalesced") == "true") == 99
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1
    assert live.app.runtime is not None and live.app.runtime.pipeline.in_flight() == 0


async def test_admin_routes_and_pattern_clear(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        admin_api_key="admin-secret",
        promptrelay_api_keys="client-1",
    )
    client = {"x-api-key": "client-1"}
    admin = {"authorization": "Bearer admin-secret"}
    async with aiohttp.ClientSession() as session:
        stats_url = f"{gateway.url}/api/cache/stats"
        assert (await session.get(stats_url)).status == 401
        assert (await session.get(stats_url, headers={"authorization": "Bearer no"})).status == 401
        assert (
            await session.get(stats_url, headers={"authorization": "Bearer client-1"})
        ).status == 403
        for text in ("one", "two", "three"):
            await _post(session, gateway.url, _body(text), client)
        stats = await (await session.get(stats_url, headers=admin)).json()
        assert stats["memory"]["entries"] == 3
        runtime = gateway.app.runtime
        assert runtime is not None
        keys = list(runtime.cache.memory._data)  # the one place we peek: which keys exist
        target = keys[0].rsplit(":", 1)[1]
        cleared = await session.post(
            f"{gateway.url}/api/cache/clear", json={"pattern": target[:10] + "*"}, headers=admin
        )
        assert (await cleared.json())["removed"] == 1
        remaining = set(runtime.cache.memory._data)
        assert remaining == set(keys[1:])
        everything = await session.post(f"{gateway.url}/api/cache/clear", headers=admin)
        assert (await everything.json())["removed"] == 2
        bad = await session.post(
            f"{gateway.url}/api/cache/clear", json={"pattern": "a:b"}, headers=admin
        )
        assert bad.status == 400
        assert (await bad.json())["type"] == "error"


async def test_cache_warm_then_hit(live, fake_upstream):
    async with aiohttp.ClientSession() as session:
        warm = await session.post(
            f"{live.url}/api/cache/warm",
            json={"requests": [_body("w1"), _body("w2"), {"model": "m"}]},
        )
        report = await warm.json()
        hit = await _post(session, live.url, _body("w2"))
    assert warm.status == 200
    assert report["stored"] == 2 and report["failed"] == 1
    assert hit[1]["x-cache"] == "HIT"


@pytest.mark.parametrize("telemetry", [True, False])
async def test_cache_stats_count_savings_once_with_or_without_telemetry(
    gateway_factory, fake_upstream, telemetry: bool
):
    gateway = gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, telemetry_enabled=telemetry
    )
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "s"}],
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # one miss, two hits
            async with session.post(f"{gateway.url}/v1/messages", json=body) as response:
                usage = (await response.json())["usage"]
        async with session.get(f"{gateway.url}/api/cache/stats") as response:
            savings = (await response.json())["savings"]
    assert (savings["hits"], savings["misses"]) == (2, 1)
    assert savings["tokens_saved"] == 2 * (usage["input_tokens"] + usage["output_tokens"])


async def test_the_same_bytes_under_another_version_or_beta_are_another_entry(live, fake_upstream):
    # A hit is keyed from the raw bytes first (a memo of bytes -> key): what surrounds
    # the body must still select the entry.
    raw = b'{"model":"claude-sonnet-4-6","max_tokens":64,'
    raw += b'"messages":[{"role":"user","content":"m"}]}'
    base = {"content-type": "application/json"}
    asks = [
        {"anthropic-version": "2023-06-01"},
        {"anthropic-version": "2023-06-01"},
        {"anthropic-version": "2023-01-01"},
        {"anthropic-version": "2023-06-01", "anthropic-beta": "b1"},
        {"anthropic-version": "2023-06-01", "anthropic-beta": "b1"},
    ]
    labels = []
    async with aiohttp.ClientSession() as session:
        for extra in asks:
            url = f"{live.url}/v1/messages"
            async with session.post(url, data=raw, headers={**base, **extra}) as response:
                assert response.status == 200
                labels.append(response.headers["x-cache"])
    assert labels == ["MISS", "HIT", "MISS", "MISS", "HIT"]
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 3
