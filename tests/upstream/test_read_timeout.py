"""UPSTREAM_READ_TIMEOUT is the longest silence between reads of an answer, not a bound on
the whole answer: a stream whose events come faster than it runs as long as it lasts."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from promptrelay.errors import UpstreamTimeout
from promptrelay.settings import Settings
from promptrelay.upstream.client import UpstreamClient

READ_TIMEOUT = 0.3
BODY = orjson.dumps(
    {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "a paced answer of some length"}],
    }
)
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"}


async def _stream(fake: Any) -> bytes:
    settings = Settings(anthropic_base_url=fake.url, upstream_read_timeout=READ_TIMEOUT)
    client = UpstreamClient(settings)
    try:
        response = await client.request(
            "POST", "/v1/messages", headers=HEADERS, body=BODY, stream=True
        )
        assert response.chunks is not None
        try:
            return b"".join([chunk async for chunk in response.chunks])
        finally:
            await response.aclose()
    finally:
        await client.close()


async def test_a_stream_longer_than_the_read_timeout_with_short_gaps_completes(fake_upstream):
    fake_upstream.configure(stream_chunks=12, chunk_interval_ms=100)  # 1.2 s, 0.1 s gaps
    payload = await _stream(fake_upstream)
    assert payload.count(b"event: content_block_delta") == 12
    assert b"message_stop" in payload


async def test_a_gap_longer_than_the_read_timeout_fails_the_stream(fake_upstream):
    fake_upstream.configure(stream_chunks=3, chunk_interval_ms=1000)
    with pytest.raises(UpstreamTimeout, match="stalled"):
        await _stream(fake_upstream)
