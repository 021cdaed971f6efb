"""`promptrelay serve` as a real process: it starts, answers, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(**env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    full_env = {**os.environ, "PORT": str(port), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptrelay", "serve"],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("promptrelay did not start") from None
                time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


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
