"""Redis faults under load, end to end: a frozen Redis costs misses nothing once it is
marked down, and a restarted one comes back once and stays up."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from promptrelay.cache.redis import RedisTier
from tests.pipeline.shared import shared_gateway


def _body(text: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
    }


@dataclass
class Load:
    """Clients sending misses (each prompt new) and hits, each call noted with the tier's
    state when it started."""

    url: str
    tier: RedisTier
    concurrency: int = 8
    calls: list[tuple[str, float, int]] = field(default_factory=list)  # state, seconds, status
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._client(session) for _ in range(self.concurrency)))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            index = next(self._ids)
            prompt = "hit" if index % 4 == 0 else f"miss {index}"
            state, started = self.tier.state, time.monotonic()
            async with session.post(f"{self.url}/v1/messages", json=_body(prompt)) as response:
                await response.read()
                self.calls.append((state, time.monotonic() - started, response.status))

    def calls_while(self, state: str) -> list[float]:
        """Seconds taken by the calls that started while the tier was in `state`."""
        return [seconds for seen, seconds, _ in self.calls if seen == state]

    def failures(self) -> list[tuple[str, float, int]]:
        return [call for call in self.calls if call[2] != 200]


async def _until(predicate: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_frozen_redis_under_load_fails_nothing_and_misses_stop_waiting(
    gateway_factory, fake_upstream, redis_server
):
    # A generous socket timeout: the bound below holds with room on a busy machine.
    socket_timeout = 2.0
    gateway = shared_gateway(
        gateway_factory,
        fake_upstream.url,
        redis_server.url,
        redis_socket_timeout=socket_timeout,
        redis_connect_timeout=0.5,
    )
    tier = gateway.app.runtime.cache.redis
    load = Load(gateway.url, tier)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        running = asyncio.create_task(load.run(session))
        await _until(lambda: len(load.calls) > 50, 10)
        redis_server.stop_signal()
        try:
            await _until(lambda: not tier.is_up, 15)
            down = len(load.calls_while("down"))
            await _until(lambda: len(load.calls_while("down")) > down + 100, 15)
        finally:
            redis_server.cont_signal()
        await _until(lambda: tier.is_up, 15)
        await _until(lambda: len(load.calls_while("up")) > 200, 10)
        load.stop()
        await running
    assert load.failures() == []
    worst = max(load.calls_while("down"))
    assert worst < socket_timeout / 2, worst  # no call waited on the frozen Redis
    assert tier.stats()["state_changes"] == 3  # up, down, up


async def test_restarted_redis_goes_down_and_up_once_then_stays_up(
    gateway_factory, fake_upstream, redis_server
):
    gateway = shared_gateway(
        gateway_factory,
        fake_upstream.url,
        redis_server.url,
        # Generous timeouts: a busy machine alone must not mark the tier down.
        redis_socket_timeout=2.0,
        redis_connect_timeout=2.0,
    )
    tier = gateway.app.runtime.cache.redis
    load = Load(gateway.url, tier, concurrency=6)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        running = asyncio.create_task(load.run(session))
        await _until(lambda: len(load.calls) > 100, 10)
        assert tier.stats()["state_changes"] == 1
        redis_server.restart()  # every pooled connection is dead now
        await _until(lambda: tier.stats()["state_changes"] == 3 and tier.is_up, 15)
        served = len(load.calls)
        writes = tier.stats()["writes"]
        # Stays up: for 10 s, or until five times the calls the bounds below ask for.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and (
            len(load.calls) < served + 500 or tier.stats()["writes"] < writes + 300
        ):
            await asyncio.sleep(0.05)
        load.stop()
        await running
    assert load.failures() == []
    assert len(load.calls) > served + 100
    assert tier.stats()["writes"] > writes + 100  # the misses reached the new Redis
    assert tier.is_up and tier.stats()["state_changes"] == 3
