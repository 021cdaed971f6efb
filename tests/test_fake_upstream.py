"""The fake Anthropic server, exercised over real HTTP with aiohttp.ClientSession."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from promptrelay.devtools.fake import FakeConfig, FakeUpstream, FakeUpstreamThread
from promptrelay.devtools.fake_config import validate_knobs
from promptrelay.devtools.fake_wire import split_text
from tests.rawhttp import raw_request

KEY = {"x-api-key": "sk-test-1"}
BODY: dict[str, Any] = {
    "model": "claude-3-haiku-20240307",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello there"}],
}
STREAM_BODY = {**BODY, "stream": True}


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def delta_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["delta"]["text"] for name, d in events if name == "content_block_delta")


async def post(session: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> Any:
    async with session.post(url + "/v1/messages", json=body, headers=KEY, **kw) as resp:
        return resp.status, resp.headers, await resp.json()


# -- POST /v1/messages -----------------------------------------------------------------


async def test_json_answer_shape_and_headers(fake, session):
    status, headers, data = await post(session, fake.url, BODY)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["request-id"].startswith("req_")
    assert headers["anthropic-ratelimit-requests-limit"] == "1000000"
    assert headers["anthropic-ratelimit-requests-remaining"] == "999999"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert data["id"].startswith("msg_")
    assert data["type"] == "message" and data["role"] == "assistant"
    assert data["model"] == BODY["model"]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    [block] = data["content"]
    assert block["type"] == "text" and block["text"].startswith("Echo: hello there [")
    assert data["usage"]["input_tokens"] >= 1 and data["usage"]["output_tokens"] >= 1


async def test_answers_are_deterministic_per_body(fake, session):
    _, h1, first = await post(session, fake.url, BODY)
    _, h2, again = await post(session, fake.url, BODY)
    _, _, other = await post(session, fake.url, {**BODY, "max_tokens": 17})
    assert first == again
    assert h1["request-id"] != h2["request-id"]
    assert other["content"][0]["text"] != first["content"][0]["text"]
    assert other["id"] != first["id"]


async def test_last_user_message_in_content_blocks(fake, session):
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    _, _, data = await post(session, fake.url, {**BODY, "messages": messages})
    assert data["content"][0]["text"].startswith("Echo: second [")


async def test_stream_event_sequence_matches_json_text(fake, session):
    _, _, data = await post(session, fake.url, BODY)
    async with session.post(fake.url + "/v1/messages", json=STREAM_BODY, headers=KEY) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["request-id"].startswith("req_")
        events = parse_sse(await resp.text())
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "future_event_type",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == payload["type"] for name, payload in events)
    start = events[0][1]["message"]
    assert start["id"] == data["id"] and start["model"] == BODY["model"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert delta_text(events) == data["content"][0]["text"]
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "end_turn"
    assert message_delta["usage"]["output_tokens"] == data["usage"]["output_tokens"]


async def test_stream_without_extra_events_and_chunk_count(fake, session):
    fake.configure(extra_events=False, stream_chunks=3)
    async with session.post(fake.url + "/v1/messages", json=STREAM_BODY, headers=KEY) as resp:
        names = [name for name, _ in parse_sse(await resp.text())]
    assert "ping" not in names and "future_event_type" not in names
    assert names.count("content_block_delta") == 3


async def test_stream_chunks_are_spaced_and_flushed(fake, session):
    fake.configure(stream_chunks=4, chunk_interval_ms=80)
    arrivals = []
    async with session.post(fake.url + "/v1/messages", json=STREAM_BODY, headers=KEY) as resp:
        async for line in resp.content:
            if line.startswith(b"event: content_block_delta"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    # The first delta arrived while the server still had three intervals to sleep.
    assert arrivals[-1] - arrivals[0] >= 0.2
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(arrivals))


async def test_stream_error_after(fake, session):
    fake.configure(stream_error_after=2)
    async with session.post(fake.url + "/v1/messages", json=STREAM_BODY, headers=KEY) as resp:
        events = parse_sse(await resp.text())
    names = [name for name, _ in events]
    assert names.count("content_block_delta") == 2
    assert names[-1] == "error" and "message_stop" not in names
    assert events[-1][1]["error"]["type"] == "overloaded_error"


async def test_close_mid_stream_after(fake, session):
    fake.configure(close_mid_stream_after=2, chunk_interval_ms=1)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(fake.url + "/v1/messages", json=STREAM_BODY, headers=KEY) as r:
            async for chunk in r.content.iter_any():
                received += chunk
    assert received.count(b"event: content_block_delta") == 2
    assert b"message_stop" not in received


async def test_api_key_required_header_or_bearer(fake, session):
    async with session.post(fake.url + "/v1/messages", json=BODY) as resp:
        assert resp.status == 401
        assert "request-id" in resp.headers
        data = await resp.json()
    assert data["type"] == "error"
    assert data["error"]["type"] == "authentication_error"
    assert fake.stats()["api_keys_seen"] == []
    bearer = {"Authorization": "Bearer sk-bearer"}
    async with session.post(fake.url + "/v1/messages", json=BODY, headers=bearer) as resp:
        assert resp.status == 200
    assert fake.stats()["api_keys_seen"] == ["sk-bearer"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        ({"max_tokens": 5, "messages": BODY["messages"]}, "model"),
        ({"model": "m", "messages": BODY["messages"]}, "max_tokens"),
        ({**BODY, "max_tokens": 0}, "max_tokens"),
        ({**BODY, "messages": []}, "messages"),
        ({**BODY, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({**BODY, "stream": "yes"}, "stream"),
    ],
)
async def test_invalid_body_is_400(fake, session, body, mentions):
    payload = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with session.post(fake.url + "/v1/messages", headers=KEY, **payload) as resp:
        assert resp.status == 400
        data = await resp.json()
    assert data["error"]["type"] == "invalid_request_error"
    assert mentions in data["error"]["message"]


# -- failure knobs ---------------------------------------------------------------------

ERROR_CASES = [
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (413, "request_too_large"),
    (429, "rate_limit_error"),
    (500, "api_error"),
    (503, "api_error"),
    (529, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "kind"), ERROR_CASES)
async def test_fail_next_status_type_and_retry_after(fake, session, status, kind):
    fake.configure(fail_next=1, fail_next_status=status, retry_after=2)
    code, headers, data = await post(session, fake.url, BODY)
    assert code == status
    assert data == {
        "type": "error",
        "error": {"type": kind, "message": data["error"]["message"]},
        "request_id": headers["request-id"],
    }
    assert data["error"]["message"]
    assert headers["retry-after"] == "2"
    assert (await post(session, fake.url, BODY))[0] == 200


async def test_fail_next_counts_down_exactly(fake, session):
    fake.configure(fail_next=3)
    codes = [(await post(session, fake.url, BODY))[0] for _ in range(5)]
    assert codes == [529, 529, 529, 200, 200]
    assert fake.config.fail_next == 0
    assert fake.stats()["by_status"] == {"529": 3, "200": 2}


async def test_garbage_next_answers_an_html_200_then_json(fake, session):
    url = fake.url + "/_fake/config"
    async with session.post(url, json={"garbage_next": 1}) as resp:
        assert resp.status == 200 and (await resp.json())["garbage_next"] == 1
    async with session.post(fake.url + "/v1/messages", json=BODY, headers=KEY) as resp:
        status, kind, text = resp.status, resp.headers["content-type"], await resp.text()
    assert status == 200 and kind.startswith("text/html") and text.startswith("<html>")
    assert fake.config.garbage_next == 0
    assert (await post(session, fake.url, BODY))[0] == 200


async def test_no_retry_after_unless_configured(fake, session):
    fake.configure(fail_status=429, fail_rate=1.0, retry_after=0.5)
    _, headers, _ = await post(session, fake.url, BODY)
    assert headers["retry-after"] == "0.5"
    fake.configure(retry_after=None)
    code, headers, data = await post(session, fake.url, BODY)
    assert code == 429 and data["error"]["type"] == "rate_limit_error"
    assert "retry-after" not in headers


async def test_fail_rate_is_a_seeded_fraction(session):
    upstream = FakeUpstream(FakeConfig(fail_status=500, fail_rate=0.3), rng=random.Random(7))
    await upstream.start()
    try:
        codes = [(await post(session, upstream.url, BODY))[0] for _ in range(100)]
    finally:
        await upstream.stop()
    assert 15 <= codes.count(500) <= 45
    assert set(codes) == {200, 500}


async def test_latency_and_jitter(fake, session):
    fake.configure(latency_ms=120)
    began = time.monotonic()
    await post(session, fake.url, BODY)
    assert time.monotonic() - began >= 0.115
    fake.configure(latency_ms=40, jitter_ms=30)
    for _ in range(3):
        began = time.monotonic()
        await post(session, fake.url, BODY)
        assert 0.005 <= time.monotonic() - began < 0.5


async def test_hang_until_client_leaves(fake, session):
    fake.configure(hang=True)
    with pytest.raises(asyncio.TimeoutError):
        await post(session, fake.url, BODY, timeout=aiohttp.ClientTimeout(total=0.3))
    for _ in range(50):
        if fake.stats()["in_flight"] == 0:
            break
        await asyncio.sleep(0.01)
    stats = fake.stats()
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    assert stats["by_status"] == {"499": 1}


async def test_stop_releases_hung_requests(session):
    upstream = FakeUpstream(FakeConfig(hang=True))
    await upstream.start()
    pending = asyncio.create_task(post(session, upstream.url, BODY))
    while upstream.stats()["in_flight"] == 0:
        await asyncio.sleep(0.01)
    began = time.monotonic()
    await upstream.stop()
    assert time.monotonic() - began < 0.3
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await pending


# -- other routes ----------------------------------------------------------------------


async def test_models_list_and_get(fake, session):
    async with session.get(fake.url + "/v1/models", headers=KEY) as resp:
        page = await resp.json()
    assert page["has_more"] is False
    ids = [m["id"] for m in page["data"]]
    assert page["first_id"] == ids[0] and page["last_id"] == ids[-1]
    assert all(m["type"] == "model" and m["display_name"] and m["created_at"] for m in page["data"])
    async with session.get(fake.url + "/v1/models?limit=2", headers=KEY) as resp:
        first = await resp.json()
    async with session.get(
        fake.url + f"/v1/models?limit=2&after_id={first['last_id']}", headers=KEY
    ) as resp:
        second = await resp.json()
    assert first["has_more"] is True
    assert [m["id"] for m in first["data"] + second["data"]] == ids[:4]
    async with session.get(fake.url + f"/v1/models/{ids[0]}", headers=KEY) as resp:
        assert (await resp.json())["id"] == ids[0]
    async with session.get(fake.url + "/v1/models/no-such-model", headers=KEY) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "not_found_error"


async def test_count_tokens_matches_usage(fake, session):
    body = {"model": BODY["model"], "messages": BODY["messages"]}
    url = fake.url + "/v1/messages/count_tokens"
    async with session.post(url, json=body, headers=KEY) as resp:
        counted = await resp.json()
    _, _, data = await post(session, fake.url, BODY)
    assert counted == {"input_tokens": data["usage"]["input_tokens"]}


async def test_unknown_route_is_404(fake, session):
    async with session.get(fake.url + "/v1/nothing", headers=KEY) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "not_found_error"


# -- stats, reset, config, connections ------------------------------------------------


async def test_stats_reset_and_headers_seen(fake, session):
    headers = {"X-Api-Key": "key-a", "Anthropic-Version": "2023-06-01"}
    async with session.post(fake.url + "/v1/messages", json=BODY, headers=headers) as resp:
        await resp.read()
    await post(session, fake.url, BODY)
    async with session.get(fake.url + "/v1/models", headers=KEY) as resp:
        await resp.read()
    async with session.get(fake.url + "/_fake/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == 3  # the control routes are not counted
    assert stats["by_path"] == {"/v1/messages": 2, "/v1/models": 1}
    assert stats["api_keys_seen"] == ["key-a", "sk-test-1"]
    assert stats["last_headers"]["x-api-key"] == "sk-test-1"
    assert stats["connections_total"] == 1 and stats["connections_open"] == 1
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    async with session.post(fake.url + "/_fake/reset") as resp:
        assert resp.status == 200
    stats = fake.stats()
    assert stats["requests"] == 0 and stats["by_path"] == {} and stats["max_in_flight"] == 0
    assert stats["api_keys_seen"] == [] and stats["last_headers"] == {}
    assert stats["connections_total"] == 0 and stats["connections_open"] == 1


async def test_config_route(fake, session):
    url = fake.url + "/_fake/config"
    async with session.post(url, json={"fail_next": 1, "latency_ms": 5}) as resp:
        assert resp.status == 200
        assert (await resp.json())["fail_next"] == 1
    assert fake.config.latency_ms == 5.0
    assert (await post(session, fake.url, BODY))[0] == 529
    for bad in ({"no_such_knob": 1}, {"fail_rate": 2}, {"hang": "yes"}, [1]):
        async with session.post(url, json=bad) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
    async with session.get(url) as resp:
        assert (await resp.json())["fail_rate"] == 0.0


async def test_connection_counting(fake):
    async with aiohttp.ClientSession() as one:
        for _ in range(5):
            await post(one, fake.url, BODY)
        assert fake.stats()["connections_total"] == 1
        assert fake.stats()["connections_open"] == 1
    async with aiohttp.ClientSession() as two:
        await post(two, fake.url, BODY)
        assert fake.stats()["connections_total"] == 2
    for _ in range(100):
        if fake.stats()["connections_open"] == 0:
            break
        await asyncio.sleep(0.01)
    assert fake.stats()["connections_open"] == 0


async def test_max_in_flight(fake, session):
    fake.configure(latency_ms=150)
    await asyncio.gather(*(post(session, fake.url, BODY) for _ in range(6)))
    stats = fake.stats()
    assert stats["max_in_flight"] == 6 and stats["in_flight"] == 0
    assert stats["connections_total"] == 6


# -- runners and the pure parts -------------------------------------------------------


def test_thread_runner_from_sync_code():
    with FakeUpstreamThread(FakeConfig(fail_next=1)) as fake:
        request = urllib.request.Request(
            fake.url + "/v1/messages", data=json.dumps(BODY).encode(), headers=KEY
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 529
        err.value.close()
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.load(resp)["type"] == "message"
        assert fake.stats()["requests"] == 2
        fake.configure(latency_ms=1)
        assert fake.config.latency_ms == 1.0
        with pytest.raises(ValueError, match="unknown knob"):
            fake.configure(bogus=1)
        fake.reset()
        assert fake.stats()["requests"] == 0
    fake.stop()  # idempotent


async def test_fixture_with_the_anthropic_sdk(fake_upstream):
    fake_upstream.configure(stream_chunks=3)
    client = anthropic.AsyncAnthropic(base_url=fake_upstream.url, api_key="sdk-key")
    try:
        message = await client.messages.create(**BODY)
        async with client.messages.stream(**BODY) as stream:
            streamed = await stream.get_final_text()
    finally:
        await client.close()
    assert message.content[0].type == "text"
    assert streamed == message.content[0].text
    assert fake_upstream.stats()["api_keys_seen"] == ["sdk-key"]


def test_run_fake_upstream_cli_entry():
    code = (
        "from promptrelay.devtools.fake import FakeConfig, run_fake_upstream;"
        "run_fake_upstream('127.0.0.1', 0, FakeConfig(latency_ms=1))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/_fake/config", timeout=5) as resp:
            assert json.load(resp)["latency_ms"] == 1.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_validate_knobs():
    assert validate_knobs({"latency_ms": 5, "fail_status": None}) == {
        "latency_ms": 5.0,
        "fail_status": None,
    }
    bad_knobs = ({"nope": 1}, {"stream_chunks": 0}, {"fail_next": 1.5}, {"garbage_next": -1})
    for bad in (*bad_knobs, {"fail_status": 42}):
        with pytest.raises(ValueError):
            validate_knobs(bad)


@pytest.mark.parametrize(("text", "chunks"), [("hello world", 5), ("ab", 5), ("x" * 10, 1)])
def test_split_text(text, chunks):
    pieces = split_text(text, chunks)
    assert "".join(pieces) == text
    assert len(pieces) == min(chunks, len(text)) and all(pieces)


# -- request log and prefix -------------------------------------------------------------


async def test_reset_empties_the_request_log_then_it_fills_again(fake):
    await asyncio.to_thread(raw_request, fake.port, b"/v1/models", headers=KEY)
    await asyncio.to_thread(raw_request, fake.port, b"/_fake/reset", b"POST")
    assert fake.stats()["request_log"] == []  # the reset itself included
    await asyncio.to_thread(raw_request, fake.port, b"/v1/models?limit=1", headers=KEY)
    await asyncio.to_thread(raw_request, fake.port, b"/v1/../x", b"DELETE", KEY)
    assert fake.stats()["request_log"] == [
        {"method": "GET", "path": "/v1/models?limit=1"},
        {"method": "DELETE", "path": "/v1/../x"},
    ]


async def test_request_log_holds_every_raw_target_control_routes_included(fake):
    targets = [b"/v1/%2e%2e/_fake/stats", b"/_fake/stats", b"/nowhere?x=%2F", b"/v1//models"]
    for target in targets:
        await asyncio.to_thread(raw_request, fake.port, target, headers=KEY)
    logged = fake.stats()["request_log"]
    assert logged == [{"method": "GET", "path": t.decode()} for t in targets]
    assert fake.stats()["requests"] == 2  # the counters still count /v1 routes only


async def test_request_log_keeps_the_last_entries_only():
    upstream = FakeUpstream(request_log_max=3)
    port = await upstream.start()
    try:
        for n in range(5):
            await asyncio.to_thread(raw_request, port, f"/_fake/stats?n={n}".encode())
        assert [e["path"] for e in upstream.stats()["request_log"]] == [
            "/_fake/stats?n=2",
            "/_fake/stats?n=3",
            "/_fake/stats?n=4",
        ]
    finally:
        await upstream.stop()


async def test_prefix_serves_under_it_and_counts_what_falls_outside(session):
    upstream = FakeUpstream(prefix="/anthropic")
    port = await upstream.start()
    try:
        assert upstream.url == f"http://127.0.0.1:{port}/anthropic"
        async with session.get(upstream.url + "/v1/models", headers=KEY) as resp:
            assert resp.status == 200
        async with session.get(upstream.url + "/_fake/stats") as resp:
            assert (await resp.json())["requests"] == 1
        for outside in (b"/v1/models", b"/_fake/stats", b"/anthropicx/v1/models", b"/"):
            answer = await asyncio.to_thread(raw_request, port, outside, headers=KEY)
            assert answer.status == 404
            assert "outside the prefix" in answer.json()["error"]["message"]
        stats = upstream.stats()
        assert stats["outside_prefix"] == 4 and stats["requests"] == 1
        assert [e["path"] for e in stats["request_log"]][-4:] == [
            "/v1/models",
            "/_fake/stats",
            "/anthropicx/v1/models",
            "/",
        ]
    finally:
        await upstream.stop()
    with pytest.raises(ValueError, match="prefix"):
        FakeUpstream(prefix="anthropic/")
