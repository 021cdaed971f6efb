"""Fixtures: a real promptrelay server in a thread, with `promptrelay serve`'s uvicorn options.

`gateway_factory(**settings)` starts one on a free loopback port and returns a
`RunningGateway`; every server started is stopped at teardown, before the test's
`fake_upstream` (a fake stopped while a gateway still holds keep-alive connections to it
waits out its 0.5 s grace period for each).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from promptrelay.app import PromptRelay, build_app
from promptrelay.server import uvicorn_options
from promptrelay.settings import Settings


class _Server(uvicorn.Server):
    """uvicorn's server, less two fixed waits that every test's teardown paid: its main
    loop wakes as soon as `wake` is called (not at its next 0.1 s tick), and its shutdown
    waits for the open connections to close instead of sleeping 0.1 s first."""

    _loop: asyncio.AbstractEventLoop | None = None
    _woken: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._woken = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """`uvicorn.Server.shutdown` with its `asyncio.sleep(0.1)` made a poll."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.1
        while self.server_state.connections and loop.time() < deadline:
            await asyncio.sleep(0.005)
        try:
            grace = self.config.timeout_graceful_shutdown
            await asyncio.wait_for(self._wait_tasks_to_complete(), timeout=grace)
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    def wake(self) -> None:
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(woken.set)


class RunningGateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: PromptRelay = build_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = uvicorn_options(settings)
        options.update(log_level="warning", timeout_graceful_shutdown=2)
        config = uvicorn.Config(self.app, **options)
        self.server = _Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("promptrelay test server did not start")
            time.sleep(0.01)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=_uvloop()) as runner:
            runner.run(self.server.serve(sockets=[self._sock]))

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.wake()
        self._thread.join(timeout=10)
        self._sock.close()


def stop_all(gateways: list[RunningGateway]) -> None:
    """Stop them together: each shutdown waits 0.1 s for its connections to close."""
    for gateway in gateways:
        gateway.server.should_exit = True
        gateway.server.wake()
    for gateway in gateways:
        gateway.stop()


def _uvloop() -> Any:
    import uvloop

    return uvloop.new_event_loop


@pytest.fixture
def gateway_factory(fake_upstream: Any) -> Iterator[Any]:
    started: list[RunningGateway] = []

    def start(**overrides: Any) -> RunningGateway:
        gateway = RunningGateway(Settings(**overrides))
        started.append(gateway)
        return gateway

    yield start
    stop_all(started)
