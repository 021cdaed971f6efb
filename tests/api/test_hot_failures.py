"""Failures on the hot routes: a bug below them is a 500 in the error envelope, logged and
counted, never a bare stack trace; the in-flight gauges stay balanced. A stream cut midway
ends in an error event without the HTTP client's own text; a client gone before its
answer is counted as 499."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


async def test_a_stream_cut_midway_ends_in_an_error_event_without_internal_text(
    gateway_factory, fake_upstream, caplog: pytest.LogCaptureFixture
):
    gateway = gateway_factory(anthropic_api_key="k", anthropic_base_url=fake_upstream.url)
    fake_upstream.configure(close_mid_stream_after=1, stream_chunks=4)
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": "cut me off"}],
    }
    with caplog.at_level(logging.WARNING, logger="promptrelay.api"):
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gateway.url}/v1/messages", json=body) as response:
                assert response.status == 200
                text = (await response.read()).decode()
    blocks = [block for block in text.strip().split("\n\n") if block]
    assert blocks[-1].startswith("event: error\n")
    error = orjson.loads(blocks[-1].split("data: ", 1)[1])["error"]
    assert error["type"] == "api_error"
    generic = "the upstream stream failed midway (api_error); see the gateway's log"
    assert error["message"] == generic
    for internal in ("ClientPayloadError", "TransferEncoding", "payload", "aiohttp", "127.0.0.1"):
        assert internal not in text
    logged = [r.getMessage() for r in caplog.records if "failed midway" in r.getMessage()]
    assert logged and "ClientPayloadError" in logged[0]  # the detail is in our log only


def _hang_up_after_sending(port: int, path: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


_SLOW = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "slow"}]}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/messages", _SLOW),
        ("/api/generate", {"prompt": "slow", "max_tokens": 8}),
        ("/v1/messages", {**_SLOW, "stream": True}),
    ],
    ids=["messages", "generate", "stream"],
)
async def test_a_client_gone_before_a_slow_miss_answers_is_counted_499(
    gateway_factory, fake_upstream, route, body
):
    gateway = gateway_factory(
        anthropic_api_key="k", anthropic_base_url=fake_upstream.url, telemetry_interval=0.2
    )
    runtime = gateway.app.runtime
    fake_upstream.configure(latency_ms=800)
    sock = _hang_up_after_sending(gateway.port, route, orjson.dumps(body))
    await _wait_for(lambda: fake_upstream.stats()["in_flight"] == 1)
    sock.close()  # gone while the upstream still works on the answer
    await _wait_for(lambda: runtime.hot.in_flight == 0 and fake_upstream.stats()["in_flight"] == 0)
    assert fake_upstream.stats()["requests"] == 1  # the upstream did get it
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/api/performance") as response:
            requests = (await response.json())["requests"]
        async with session.get(f"{gateway.url}/metrics") as response:
            metrics = await response.text()
    assert requests["statuses"] == {"client_gone": 1}
    assert requests["by_route"][route]["count"] == 1
    samples = [
        s
        for family in text_string_to_metric_families(metrics)
        if family.name == "promptrelay_requests"
        for s in family.samples
        if s.name.endswith("_total")
    ]
    assert [(s.labels["route"], s.labels["status"], s.value) for s in samples] == [
        (route, "499", 1.0)
    ]
    async with aiohttp.ClientSession() as session:  # the answer was kept all the same
        async with session.post(f"{gateway.url}{route}", json=body) as response:
            await response.read()
            assert (response.status, response.headers["x-cache"]) == (200, "HIT")


async def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
