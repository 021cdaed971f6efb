"""`promptrelay serve` as a real process: it starts, answers, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket

import aiohttp

from tests.fixtures_process import serve_process as serve


async def test_default_process_serves_offline_health():
    with serve() as (process, url):
        async with aiohttp.ClientSession() as session:
            payload = await (await session.get(f"{url}/api/health")).json()
        assert payload["mode"].startswith("offline")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert process.stdout is not None
        log = process.stdout.read().decode()
    assert "ANTHROPIC_API_KEY" in log


async def test_sigterm_drains_an_in_flight_stream(fake_upstream):
    fake_upstream.configure(stream_chunks=12, chunk_interval_ms=100)
    env = {
        "ANTHROPIC_API_KEY": "k",
        "ANTHROPIC_BASE_URL": fake_upstream.url,
        "SHUTDOWN_GRACE": "15",
    }
    with serve(**env) as (process, url):
        body = {
            "model": "m",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": "drain me"}],
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/v1/messages", json=body) as response:
                async for line in response.content:
                    if b"text_delta" in line:
                        break
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                port = int(url.rsplit(":", 1)[1])
                refused = False
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    refused = True
                rest = await response.read()
        assert refused, "a draining server must not accept new connections"
        assert rest.count(b"text_delta") == 11
        assert b"message_stop" in rest
        assert process.wait(timeout=15) == 0
