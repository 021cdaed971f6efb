"""The shared breaker's probe lease across processes: when the process holding the probe
(a real `promptrelay serve`) is SIGKILLed mid-probe, another one (here an in-thread
server on the same Redis) probes within a lease."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import aiohttp

from tests.fixtures_redis import free_port

LEASE = 2.0
RESET = 1.0


@contextmanager
def serve(env: dict[str, str], count: int) -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    """`count` `promptrelay serve` processes started together (logs in temporary files),
    each ended by its PID."""
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory())  # their SQLite files
        started = []
        for _ in range(count):
            port = free_port()
            log = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [sys.executable, "-m", "promptrelay", "serve"],
                env={**os.environ, **env, "PORT": str(port)},
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(_end, process)
            started.append((process, f"http://127.0.0.1:{port}"))
        for process, url in started:
            _wait_healthy(process, url)
        yield started


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def _wait_healthy(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("promptrelay did not start")
        time.sleep(0.1)


def _body(text: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
    }


async def _post(session: aiohttp.ClientSession, url: str, text: str) -> tuple[int, Any]:
    async with session.post(f"{url}/v1/messages", json=_body(text)) as response:
        await response.read()
        return response.status, response.headers.copy()


async def test_a_killed_probe_holder_frees_the_probe_within_its_lease(
    gateway_factory, fake_upstream, redis_server
):
    env = {
        "ANTHROPIC_API_KEY": "gw",
        "ANTHROPIC_BASE_URL": fake_upstream.url,
        "REDIS_ENABLED": "true",
        "REDIS_URL": redis_server.url,
        "UPSTREAM_RETRIES": "0",
        "CIRCUIT_FAILURE_THRESHOLD": "1",
        "CIRCUIT_RESET_TIMEOUT": str(RESET),
        "CIRCUIT_PROBE_LEASE": str(LEASE),
        "TELEMETRY_ENABLED": "false",
        "LOG_LEVEL": "warning",
    }
    other = gateway_factory(**{name.lower(): value for name, value in env.items()})
    b = other.url
    with serve(env, 1) as [(holder, a)]:
        async with aiohttp.ClientSession() as session:
            fake_upstream.configure(fail_status=500, fail_rate=1.0)
            assert (await _post(session, a, "opens it"))[0] == 500
            assert (await _post(session, b, "shared"))[0] == 503  # b adopts a's opening
            fake_upstream.configure(fail_rate=0.0, fail_status=None, hang=True)
            fake_upstream.reset()
            await asyncio.sleep(RESET + 0.1)

            probe = asyncio.create_task(_post(session, a, "a probes"))
            await _until(lambda: fake_upstream.stats()["in_flight"] == 1, 10)
            status, headers = await _post(session, b, "b waits")
            assert status == 503
            assert int(headers["retry-after"]) <= LEASE  # the lease, not UPSTREAM_TIMEOUT

            holder.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            fake_upstream.configure(hang=False)
            while True:
                status, headers = await _post(session, b, f"b probes {time.monotonic()}")
                if status == 200:
                    break
                assert status == 503 and int(headers["retry-after"]) <= LEASE
                assert time.monotonic() - killed < LEASE + 5, "the probe stayed locked"
                await asyncio.sleep(0.1)
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            async with session.get(f"{b}/api/health") as response:
                health = await response.json()
    assert health["breaker"]["state"] == "closed"
    stats = fake_upstream.stats()
    assert stats["by_path"]["/v1/messages"] == 2  # a's probe, then b's: nothing else
    assert stats["max_in_flight"] == 1  # one probe at a time


async def _until(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
