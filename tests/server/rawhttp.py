"""Raw HTTP/1.1 over asyncio streams, for heads no HTTP client library would send."""

from __future__ import annotations

import asyncio

import orjson

from tests.rawhttp import Raw, parse_head

__all__ = ["Answer", "exchange", "read_answer"]


class Answer(Raw):
    def error(self) -> dict[str, str]:
        """The error object of Anthropic's envelope, checking the envelope on the way."""
        assert self.headers["content-type"] == "application/json"
        payload = orjson.loads(self.body)
        assert payload["type"] == "error"
        assert set(payload["error"]) == {"type", "message"}
        error: dict[str, str] = payload["error"]
        return error


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One response; its body by content-length."""
    status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


async def exchange(port: int, raw: bytes) -> Answer:
    """Send `raw` on a new connection and read the one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()
