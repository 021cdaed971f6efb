"""Slow and greedy clients against a real server: heads and bodies have deadlines, the
connection count has a cap, memory stays flat, and everyone else is served meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import psutil
import pytest

from promptrelay.server import ServerLimits
from tests.fixtures_process import serve_process
from tests.server.rawhttp import exchange, read_answer

MiB = 1024 * 1024
HEAD_TIMEOUT = 1.0
MESSAGE = b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "%s"}]}'


class Served:
    def __init__(self, pid: int, url: str) -> None:
        self.process = psutil.Process(pid)
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def rss(self) -> int:
        return self.process.memory_info().rss


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One `promptrelay serve` process for the memory tests: RSS is its own, not pytest's."""
    env = {"HEAD_TIMEOUT": str(HEAD_TIMEOUT), "BODY_IDLE_TIMEOUT": "1", "LOG_LEVEL": "warning"}
    with serve_process(**env) as (process, url):
        yield Served(process.pid, url)


async def _warm(session: aiohttp.ClientSession, served: Served) -> int:
    """Serve a few requests so lazily built state exists, then read the baseline RSS."""
    for _ in range(20):
        async with session.get(f"{served.url}/api/health") as response:
            assert response.status == 200
    return served.rss()


async def test_one_mebibyte_headers_are_refused_without_growing_memory(served):
    async with aiohttp.ClientSession() as session:
        before = await _warm(session, served)
    head = b"GET /api/health HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * MiB + b"\r\n\r\n"
    answers = await asyncio.gather(*(exchange(served.port, head) for _ in range(4)))
    assert [answer.status for answer in answers] == [431] * 4
    assert answers[0].error()["type"] == "request_too_large"
    assert served.rss() - before < 5 * MiB


async def _never_ending_head(port: int) -> float:
    """Send a head a byte at a time, forever; return when the server has closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/health HTTP/1.1\r\nhost: t\r\nx-slow: ")
    try:
        while not reader.at_eof():
            writer.write(b"s")
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic()


async def test_never_ending_heads_are_closed_while_others_are_served(served):
    async with aiohttp.ClientSession() as session:
        before = await _warm(session, served)
        started = time.monotonic()
        slow = [asyncio.create_task(_never_ending_head(served.port)) for _ in range(200)]
        statuses = []
        while not all(task.done() for task in slow):
            async with session.get(f"{served.url}/api/health") as response:
                statuses.append(response.status)
            assert time.monotonic() - started < HEAD_TIMEOUT + 10, "slow heads still open"
            await asyncio.sleep(0.05)
        closed_at = await asyncio.gather(*slow)
    assert max(closed_at) - started < HEAD_TIMEOUT + 10
    assert statuses and set(statuses) == {200}
    assert served.rss() - before < 10 * MiB


async def test_a_body_that_stops_arriving_is_closed_with_408(gateway_factory):
    gateway = gateway_factory(body_idle_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    body = MESSAGE % b"stalled"
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body[:10]
    )
    answer = await asyncio.wait_for(read_answer(reader), 10)
    assert answer.status == 408
    assert answer.error()["type"] == "timeout_error"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # then closed
    writer.close()


async def test_a_slow_but_steady_body_upload_succeeds(gateway_factory):
    gateway = gateway_factory(body_idle_timeout=0.5)
    body = MESSAGE % (b"z" * 3000)
    pieces = [body[i : i + 500] for i in range(0, len(body), 500)]

    async def trickle() -> AsyncIterator[bytes]:
        for piece in pieces:  # ~7 pieces 0.2 s apart: longer in all than the idle timeout
            yield piece
            await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        url = f"{gateway.url}/v1/messages"
        headers = {"content-type": "application/json"}
        async with session.post(url, data=trickle(), headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["type"] == "message"


async def test_connections_beyond_the_cap_get_503_then_are_served_again(gateway_factory):
    gateway = gateway_factory(max_connections=5)
    health = b"GET /api/health HTTP/1.1\r\nhost: t\r\n\r\n"
    held = []
    for _ in range(5):  # each answered once, so the server has surely accepted it
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(health)
        assert (await read_answer(reader)).status == 200
        held.append(writer)
    refused = await exchange(gateway.port, health)
    assert refused.status == 503
    assert refused.error()["type"] == "overloaded_error"
    assert int(refused.headers["retry-after"]) >= 1
    for writer in held:
        writer.close()
    deadline = time.monotonic() + 10
    while (answer := await exchange(gateway.port, health)).status != 200:
        assert answer.status == 503
        assert time.monotonic() < deadline, "the cap never freed up"
        await asyncio.sleep(0.05)


async def test_a_later_head_on_a_kept_alive_connection_has_its_own_deadline(gateway_factory):
    gateway = gateway_factory(head_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    health = b"GET /api/health HTTP/1.1\r\nhost: t\r\n\r\n"
    for _ in range(3):  # idle between requests longer than the head timeout: not a head
        writer.write(health)
        assert (await read_answer(reader)).status == 200
        await asyncio.sleep(0.6)
    writer.write(health[:20])
    answer = await asyncio.wait_for(read_answer(reader), 10)
    writer.close()
    assert answer.status == 408
    assert "head" in answer.error()["message"]


def _open_server_side(gateway: Any) -> int:
    """Connections the server holds that are not already closing (read across threads)."""
    while True:
        try:
            held = list(gateway.server.server_state.connections)
        except RuntimeError:  # the server thread changed the set meanwhile
            continue
        return sum(1 for protocol in held if not protocol.transport.is_closing())


async def test_a_flood_beyond_the_cap_cannot_hold_a_descriptor_each(gateway_factory):
    gateway = gateway_factory(max_connections=4)
    slots = ServerLimits().lingering_refusals
    health = b"GET /api/health HTTP/1.1\r\nhost: t\r\n\r\n"
    held = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(health)
        assert (await read_answer(reader)).status == 200
        held.append(writer)
    flood = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(slots + 40)]
    for reader, _writer in flood:  # every one refused, the polite ones and the rest alike
        assert (await read_answer(reader)).status == 503
    # The first `slots` linger (their client has not hung up); the others are closed at once.
    assert _open_server_side(gateway) <= 4 + slots
    for writer in held + [writer for _reader, writer in flood]:
        writer.close()
