"""Fixtures: a real promptrelay server in a thread, with `promptrelay serve`'s uvicorn options.

`gateway_factory(**settings)` starts one on a free loopback port and returns a
`RunningGateway`; every server started is stopped at teardown, before the test's
`fake_upstream` (a fake stopped while a gateway still holds keep-alive connections to it
waits out its 0.5 s grace period for each).
"""

from __future__ import annotations

import asyncio
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
        self.server = uvicorn.Server(config)
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
        self._thread.join(timeout=10)
        self._sock.close()


def stop_all(gateways: list[RunningGateway]) -> None:
    """Stop them together: each shutdown waits on uvicorn's 0.1 s ticks."""
    for gateway in gateways:
        gateway.server.should_exit = True
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
