"""Every upstream call through the one resilient client: pass-through calls and Message
Batches count in the breaker, fail fast while it is open and emit UpstreamFinished; an
async item answered from the cache is a hit in /api/performance and /metrics."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from promptrelay.core.events import Event, UpstreamFinished

OPEN_FOR = 30  # seconds: the circuit stays open for the whole test


def _live(gateway_factory: Any, fake_upstream: Any, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "anthropic_api_key": "gw",
        "anthropic_base_url": fake_upstream.url,
        "upstream_retries": 0,
        "circuit_failure_threshold": 1,
        "circuit_reset_timeout": OPEN_FOR,
    }
    return gateway_factory(**{**settings, **overrides})


async def _open_the_circuit(session: aiohttp.ClientSession, url: str, fake_upstream: Any) -> None:
    fake_upstream.configure(fail_next=1, fail_next_status=500)
    async with session.post(f"{url}/api/generate", json={"prompt": "fails"}) as r:
        assert r.status == 500
    async with session.get(f"{url}/api/health") as r:
        assert (await r.json())["breaker"]["state"] == "open"


async def test_an_open_circuit_refuses_async_batch_creation_without_sending(
    gateway_factory, fake_upstream
):
    gateway = _live(gateway_factory, fake_upstream)
    async with aiohttp.ClientSession() as session:
        await _open_the_circuit(session, gateway.url, fake_upstream)
        batch = {"mode": "async", "requests": [{"prompt": "later"}]}
        async with session.post(f"{gateway.url}/api/generate/batch", json=batch) as r:
            status, retry_after, body = r.status, r.headers.get("retry-after"), await r.json()
    assert status == 503
    assert retry_after is not None and 1 <= int(retry_after) <= OPEN_FOR
    assert body["error"]["type"] == "overloaded_error"
    assert "/v1/messages/batches" not in fake_upstream.stats()["by_path"]


async def test_an_open_circuit_refuses_other_v1_routes_without_sending(
    gateway_factory, fake_upstream
):
    gateway = _live(gateway_factory, fake_upstream)
    async with aiohttp.ClientSession() as session:
        await _open_the_circuit(session, gateway.url, fake_upstream)
        async with session.get(f"{gateway.url}/v1/models") as r:
            status, retry_after = r.status, r.headers.get("retry-after")
    assert status == 503 and retry_after is not None
    assert "/v1/models" not in fake_upstream.stats()["by_path"]


async def test_a_batch_creation_5xx_counts_in_the_breaker_and_is_not_retried(
    gateway_factory, fake_upstream
):
    gateway = _live(gateway_factory, fake_upstream, upstream_retries=2)
    finished: list[UpstreamFinished] = []

    def listen(event: Event) -> None:
        if isinstance(event, UpstreamFinished):
            finished.append(event)

    runtime = gateway.app.runtime
    runtime.events.subscribe(listen)
    fake_upstream.configure(fail_next=1, fail_next_status=503)  # the batch creation fails
    batch = {"mode": "async", "requests": [{"prompt": "x"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/api/generate/batch", json=batch) as r:
            assert r.status == 503  # the upstream's own refusal, passed on
        async with session.post(f"{gateway.url}/api/generate", json={"prompt": "x"}) as r:
            assert r.status == 503  # the circuit it opened
            assert (await r.json())["error"]["type"] == "overloaded_error"
    assert fake_upstream.stats()["by_path"] == {"/v1/messages/batches": 1}  # no retries
    assert [(e.status, e.attempts) for e in finished] == [(503, 1)]


async def test_an_async_item_answered_from_the_cache_is_a_counted_hit(
    gateway_factory, fake_upstream
):
    gateway = _live(gateway_factory, fake_upstream)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}/api/generate", json={"prompt": "cached"}) as r:
            assert r.headers["x-cache"] == "MISS"
        batch = {"mode": "async", "requests": [{"prompt": "cached"}]}
        async with session.post(f"{gateway.url}/api/generate/batch", json=batch) as r:
            job = await r.json()
        assert job["status"] == "ended" and job["results"][0]["result"]["cached"] is True
        async with session.get(f"{gateway.url}/api/performance") as r:
            perf = await r.json()
        async with session.get(f"{gateway.url}/metrics") as r:
            families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    assert perf["cache"]["hits"] == 1 and perf["cache"]["misses"] == 1
    hits = sum(
        s.value
        for s in families["promptrelay_cache_lookups"].samples
        if s.name.endswith("_total") and s.labels.get("result") == "hit"
    )
    assert hits == 1
    assert "/v1/messages/batches" not in fake_upstream.stats()["by_path"]
