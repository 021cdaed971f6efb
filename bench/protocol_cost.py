"""CPU per request of the HTTP protocol alone: GatewayProtocol vs uvicorn's stock httptools.

No sockets: each protocol is handed an in-memory transport and fed `--requests`
keep-alive requests (a POST with a small body, as a cache hit receives), answered by a
two-message ASGI app, on one uvloop loop. Rounds alternate the two protocols, each
first in turn; each protocol's figure is its fastest round in process CPU time, which
other jobs on a shared machine can slow down but not speed up. What it shows is the protocol's own
cost; the gateway's hit path does more per request, so its relative cost there is lower.

Timings on a busy machine move by tens of percent; the function calls per request each
protocol makes (counted under a profile hook) do not, and are printed too.

    .venv/bin/python bench/protocol_cost.py [--requests 20000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from promptrelay.server import GatewayProtocol, ServerLimits

BODY = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"same"}]}'
REQUEST = (
    b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"x-api-key: bench-key\r\nanthropic-version: 2023-06-01\r\n"
    b"content-length: %d\r\n\r\n" % len(BODY) + BODY
)
ANSWER = b'{"id":"msg","type":"message","content":[]}'


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class MemoryTransport(asyncio.Transport):
    """Counts answers; everything else a protocol asks of a transport is a no-op."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


async def _round(factory: Callable[..., HttpToolsProtocol], requests: int) -> float:
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    config.load()
    protocol = factory(config=config, server_state=ServerState(), app_state={})
    transport = MemoryTransport()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        while protocol.cycle is None or not protocol.cycle.response_complete:
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    assert transport.writes >= requests
    protocol.connection_lost(None)
    return elapsed / requests


def count_calls(factory: Callable[..., HttpToolsProtocol], requests: int) -> Counter[str]:
    """Function calls per request (Python and C), counted by a profile hook: a cost
    that load on the machine cannot change."""
    counts: Counter[str] = Counter()

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            counts[event] += 1

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_round(factory, 100))  # warm
        sys.setprofile(hook)
        try:
            runner.run(_round(factory, requests))
        finally:
            sys.setprofile(None)
    return Counter({event: n // requests for event, n in counts.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    factories: dict[str, Callable[..., HttpToolsProtocol]] = {
        "stock httptools": HttpToolsProtocol,
        "GatewayProtocol": functools.partial(GatewayProtocol, limits=ServerLimits()),
    }
    best = dict.fromkeys(factories, float("inf"))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for round_ in range(args.rounds):
            order = list(factories.items())
            for name, factory in order if round_ % 2 else order[::-1]:
                best[name] = min(best[name], runner.run(_round(factory, args.requests)))
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e6:.2f} µs CPU per request (best of {args.rounds} rounds)")
    for name, factory in factories.items():
        calls = count_calls(factory, 1000)
        print(f"{name}: {calls['call']} Python and {calls['c_call']} C calls per request")
    ratio = best["GatewayProtocol"] / best["stock httptools"]
    extra = (best["GatewayProtocol"] - best["stock httptools"]) * 1e9
    print(f"ratio GatewayProtocol / stock: {ratio:.3f} ({extra:+.0f} ns per request)")


if __name__ == "__main__":
    main()
