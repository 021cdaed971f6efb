"""A bug below the hot routes: a 500 in the error envelope, logged and counted, never a
bare stack trace; the in-flight gauges stay balanced."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from promptrelay.core.events import Event, RequestFinished
from promptrelay.core.pipeline import Ask, Prepared


class _BrokenPipeline:
    """Stands in for the pipeline with a bug in it."""

    async def prepare(self, ask: Ask) -> Prepared:
        raise RuntimeError("a bug")


async def test_an_unexpected_error_is_an_enveloped_500_and_is_counted(
    gateway_factory, caplog: pytest.LogCaptureFixture
):
    gateway = gateway_factory()
    runtime = gateway.app.runtime
    assert runtime is not None
    finished: list[RequestFinished] = []

    def listen(event: Event) -> None:
        if isinstance(event, RequestFinished):
            finished.append(event)

    runtime.events.subscribe(listen)
    runtime.hot._pipeline = _BrokenPipeline()
    with caplog.at_level(logging.ERROR, logger="promptrelay.api"):
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"{gateway.url}/api/generate", json={"prompt": "x"})
            payload = await response.json()
            health = await session.get(f"{gateway.url}/api/health")
            assert health.status == 200
    assert response.status == 500
    assert payload["type"] == "error" and payload["error"]["type"] == "api_error"
    assert "RuntimeError" not in payload["error"]["message"]
    assert any("failed unexpectedly" in record.message for record in caplog.records)
    assert [(event.route, event.status) for event in finished] == [("/api/generate", 500)]
    assert (runtime.hot.in_flight, runtime.hot.in_flight_bytes) == (0, 0)


async def test_generate_answers_502_when_a_200_upstream_body_is_not_json(
    gateway_factory, fake_upstream
):
    gateway = gateway_factory(anthropic_api_key="k", anthropic_base_url=fake_upstream.url)
    fake_upstream.configure(garbage_next=1)
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/api/generate", json={"prompt": "x"})
        payload = await response.json()
        again = await session.post(f"{gateway.url}/api/generate", json={"prompt": "x"})
        assert again.status == 200
    assert response.status == 502
    assert payload["error"]["type"] == "api_error" and "not JSON" in payload["error"]["message"]
    assert again.headers["x-cache"] == "MISS"  # the page was never stored
