"""The response head written by `promptrelay.server.cycle` is byte for byte uvicorn's, with
the same state after it and the same errors, for every head shape: the ones it writes
itself and the ones it hands to uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from promptrelay.server.cycle import cycles_built_here

DATE = [(b"date", b"Tue, 01 Dec 2026 00:00:00 GMT")]
HEADS: list[tuple[str, int, Any, bool]] = [
    ("GET", 200, [(b"content-type", b"application/json"), (b"content-length", b"2")], True),
    (
        "GET",
        200,
        [(b"x-cache", b"MISS"), (b"request-id", b"req_1"), (b"content-length", b"0")],
        False,
    ),
    ("GET", 200, [(b"content-type", b"text/event-stream")], True),  # chunked
    ("HEAD", 200, [(b"content-type", b"application/json")], True),
    ("GET", 204, [], True),
    ("GET", 304, [(b"etag", b'"x"')], True),
    ("GET", 200, [], True),
    ("GET", 200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"1")], True),
    ("GET", 200, [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")], True),
    ("GET", 200, [(b"connection", b"close"), (b"content-length", b"0")], True),
    ("GET", 200, [(b"transfer-encoding", b"chunked")], True),
    ("GET", 200, [(b"content-length", b"3"), (b"content-length", b"4")], True),
    ("GET", 200, [[b"x-list", b"pair"], (b"content-length", b"1")], True),
    ("GET", 200, [(b"x-tab", b"a\tb"), (b"content-length", b"1")], True),
    ("GET", 200, ((b"x-tuple", b"t"), (b"content-length", b"1")), True),
]
BAD: list[list[Any]] = [
    [(b"x-bad", b"a\r\nb: c")],
    [(b"x-bad", b"\x00")],
    [(b"bad name", b"v")],
    [(b"bad:name", b"v")],
]


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return False


def _cycle(
    method: str, keep_alive: bool, ours: bool, done: list[int] | None = None
) -> tuple[RequestResponseCycle, _Transport]:
    transport = _Transport()
    with cycles_built_here if ours else contextlib.nullcontext():
        built = httptools_impl.RequestResponseCycle
    assert (built is RequestResponseCycle) is not ours
    assert httptools_impl.RequestResponseCycle is RequestResponseCycle  # put back
    cycle = built(
        scope={"method": method},  # type: ignore[typeddict-item]
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=DATE,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append(1) if done is not None else None,
    )
    return cycle, transport


def _state(cycle: RequestResponseCycle) -> tuple[Any, ...]:
    return (
        cycle.response_started,
        cycle.chunked_encoding,
        cycle.expected_content_length,
        cycle.keep_alive,
        cycle.waiting_for_100_continue,
        cycle.response_complete,
        cycle.message_event.is_set(),
    )


@pytest.mark.parametrize(("method", "status", "headers", "keep_alive"), HEADS)
async def test_same_head_and_state_as_uvicorn(
    method: str, status: int, headers: Any, keep_alive: bool
) -> None:
    results = []
    for ours in (False, True):
        cycle, transport = _cycle(method, keep_alive, ours)
        await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
        results.append((transport.written, _state(cycle)))
    assert results[1] == results[0]


async def test_headers_from_an_iterator_reach_uvicorn_whole() -> None:
    results = []
    for ours in (False, True):
        cycle, transport = _cycle("GET", True, ours)
        headers = iter([(b"x-one", b"1"), (b"content-length", b"0")])
        await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        results.append(transport.written)
    assert results[1] == results[0]
    assert b"x-one: 1" in results[0]


@pytest.mark.parametrize("headers", BAD)
async def test_same_refusal_as_uvicorn(headers: list[Any]) -> None:
    errors = []
    for ours in (False, True):
        cycle, transport = _cycle("GET", True, ours)
        with pytest.raises(RuntimeError) as raised:
            await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        errors.append((str(raised.value), transport.written))
    assert errors[1] == errors[0]


LENGTH = [(b"content-length", b"5")]
BODIES: list[tuple[str, list[Any], bool, list[dict[str, Any]]]] = [
    ("GET", LENGTH, True, [{"body": b"hello"}]),
    ("GET", LENGTH, False, [{"body": b"hello"}]),  # connection: close after the answer
    ("GET", LENGTH, True, [{"body": b"he", "more_body": True}, {"body": b"llo"}]),
    ("HEAD", LENGTH, True, [{"body": b""}]),
    ("GET", [], True, [{"body": b"chunk", "more_body": True}, {"body": b""}]),
    ("GET", LENGTH, True, [{"body": b"hi"}]),  # shorter than declared
    ("GET", LENGTH, True, [{"body": b"hello world"}]),  # longer than declared
    ("GET", LENGTH, True, [{"body": b"hello"}, {"body": b"again"}]),  # after the end
    ("GET", LENGTH, True, [{"type": "http.response.start", "status": 200}]),
]


@pytest.mark.parametrize(("method", "headers", "keep_alive", "bodies"), BODIES)
async def test_same_body_writes_as_uvicorn(
    method: str, headers: list[Any], keep_alive: bool, bodies: list[dict[str, Any]]
) -> None:
    results = []
    for ours in (False, True):
        done: list[int] = []
        cycle, transport = _cycle(method, keep_alive, ours, done)
        await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        error = None
        try:
            for body in bodies:
                message: Any = {"type": "http.response.body", **body}
                await cycle.send(message)
        except RuntimeError as raised:
            error = str(raised)
        results.append((transport.written, transport.closed, _state(cycle), error, done))
    assert results[1] == results[0]
