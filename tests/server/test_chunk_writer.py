"""A streamed answer's events written by the ChunkWriter from the fanout's producer, and
through uvicorn's `send` whenever the client reads too slowly for that."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import pytest

from promptrelay.core.sse import assemble_message
from promptrelay.server.protocol import ChunkWriter, GatewayProtocol


@pytest.fixture
def live(gateway_factory, fake_upstream):
    return gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)


@pytest.fixture
def writes(monkeypatch) -> dict[bool, int]:
    """ChunkWriter.write's answers counted: True (written) and False (refused)."""
    counts = {True: 0, False: 0}
    write = ChunkWriter.write

    def counted(self: ChunkWriter, chunk: bytes) -> bool:
        taken = write(self, chunk)
        counts[taken] += 1
        return taken

    monkeypatch.setattr(ChunkWriter, "write", counted)
    return counts


def _body(prompt: str) -> bytes:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    return orjson.dumps(body)


def _text(payload: bytes) -> str:
    message = assemble_message(payload)
    assert message is not None
    return "".join(block["text"] for block in message["content"])


async def test_a_paced_stream_is_written_by_the_chunk_writer(live, fake_upstream, writes):
    fake_upstream.configure(stream_chunks=20, chunk_interval_ms=5)
    async with aiohttp.ClientSession() as session:
        url = f"{live.url}/v1/messages"
        headers = {"content-type": "application/json"}
        async with session.post(url, data=_body("paced " * 40), headers=headers) as response:
            assert response.status == 200
            payload = await response.read()
    assert payload.count(b"event: content_block_delta") == 20
    assert b"message_stop" in payload
    assert writes[True] >= 15  # the deltas 5 ms apart, each handed over as it came


@pytest.fixture
def small_buffers(monkeypatch) -> None:
    """Server connections with a 4 KiB socket send buffer and 1 KiB of write buffer before
    flow control pauses writing, so a client that stops reading soon fills them."""
    made = GatewayProtocol.connection_made

    def connection_made(self: GatewayProtocol, transport: Any) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport.set_write_buffer_limits(high=1024)
        made(self, transport)

    monkeypatch.setattr(GatewayProtocol, "connection_made", connection_made)


async def test_a_client_that_stops_reading_gets_the_whole_stream_in_order(
    small_buffers, live, fake_upstream, writes
):
    fake_upstream.configure(stream_chunks=1900, chunk_interval_ms=1)
    prompt = "".join(f"{n:03d} " for n in range(480))  # the fake echoes 2,000 characters
    body = _body(prompt)
    head = (
        b"POST /v1/messages HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    host, port = live.url.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((host, int(port)))
        client.sendall(head + body)
        await asyncio.sleep(1.0)  # not reading: the server's writes pile up, then pause
        client.setblocking(False)
        received = bytearray()
        loop = asyncio.get_running_loop()
        while chunk := await loop.sock_recv(client, 65536):
            received += chunk
    _, _, chunked = bytes(received).partition(b"\r\n\r\n")
    payload = _dechunk(chunked)
    assert writes[False] >= 1  # refused at least once: written through send meanwhile
    assert payload.count(b"event: content_block_delta") == 1900
    assert _text(payload).split()[1:-1] == prompt.split()


def _dechunk(data: bytes) -> bytes:
    out, at = bytearray(), 0
    while True:
        size_end = data.index(b"\r\n", at)
        size = int(data[at:size_end], 16)
        if size == 0:
            return bytes(out)
        out += data[size_end + 2 : size_end + 2 + size]
        at = size_end + 2 + size + 2
