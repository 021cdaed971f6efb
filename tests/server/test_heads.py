"""Request heads at the server layer: capped while they arrive, malformed ones in the error
shape, and everything a normal client sends still served (real server, real sockets)."""

from __future__ import annotations

import asyncio

import pytest

from tests.server.rawhttp import exchange, read_answer

HEALTH = b"GET /api/health HTTP/1.1\r\nhost: t\r\n"
MESSAGE = b'{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "%s"}]}'


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory(max_header_bytes=4096)


async def test_head_over_the_cap_is_431_in_the_error_shape(gateway):
    answer = await exchange(gateway.port, HEALTH + b"x-big: " + b"a" * 8000 + b"\r\n\r\n")
    assert answer.status == 431
    assert answer.headers["connection"] == "close"
    error = answer.error()
    assert error["type"] == "request_too_large"
    assert "4096" in error["message"]


async def test_head_under_the_cap_is_served(gateway):
    answer = await exchange(gateway.port, HEALTH + b"x-big: " + b"a" * 3000 + b"\r\n\r\n")
    assert answer.status == 200


async def test_many_small_headers_count_toward_the_cap(gateway):
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(600))
    assert (await exchange(gateway.port, HEALTH + headers + b"\r\n")).status == 431


async def test_head_sent_byte_by_byte_is_capped(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(HEALTH)
    for _ in range(5000):
        if reader.at_eof() or writer.is_closing():
            break
        writer.write(b"a")
        await writer.drain()
    answer = await read_answer(reader)
    writer.close()
    assert answer.status == 431


async def test_a_body_larger_than_the_head_cap_is_not_counted(gateway):
    body = MESSAGE % (b"y" * 20_000)
    head = b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    answer = await exchange(gateway.port, head + b"content-length: %d\r\n\r\n" % len(body) + body)
    assert answer.status == 200


async def test_keep_alive_and_pipelined_requests_each_get_a_fresh_cap(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    filler = b"x-fill: " + b"f" * 3000 + b"\r\n\r\n"
    for _ in range(3):  # 9 KB of heads in all on one connection, each under 4 KB
        writer.write(HEALTH + filler)
        assert (await read_answer(reader)).status == 200
    writer.write((HEALTH + filler) * 3)
    statuses = [(await read_answer(reader)).status for _ in range(3)]
    writer.close()
    assert statuses == [200, 200, 200]


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ncontent-length: abc\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ncontent-length: 1, 2\r\n\r\n",
        b"GET /api/health HTTP/1.1 trailing\r\nhost: t\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nbad header: x\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nhost: t\x01\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=[
        "content-length-letters",
        "content-length-list",
        "request-line",
        "no-http",
        "header-name-space",
        "header-control-char",
        "chunk-size",
    ],
)
async def test_malformed_heads_get_400_in_the_error_shape(gateway, raw):
    answer = await exchange(gateway.port, raw)
    assert answer.status == 400
    assert answer.error()["type"] == "invalid_request_error"
