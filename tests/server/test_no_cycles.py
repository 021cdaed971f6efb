"""A request leaves no reference cycle behind: its objects are freed when it ends, not by
a collection. With a thousand requests in flight, cyclic per-request garbage went into
the oldest generation and every full collection had to scan it (docs/benchmarks.md, the
tail at 1,024 concurrent)."""

from __future__ import annotations

import gc
import socket

REQUESTS = 40
BAD = b"not json"
HEAD = b"POST /v1/messages HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
RAW = HEAD + b"content-length: %d\r\n\r\n" % len(BAD) + BAD


def _status(port: int) -> bytes:
    """One request over a plain blocking socket (no client-side objects to collect)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(RAW)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b" ", 2)[1]


def _unreachable_after(port: int, requests: int) -> int:
    gc.collect()
    gc.disable()
    try:
        for _ in range(requests):
            assert _status(port) == b"400"
        return gc.collect()
    finally:
        gc.enable()


def test_requests_leave_no_cyclic_garbage(gateway_factory):
    gateway = gateway_factory()
    _unreachable_after(gateway.port, 5)  # the first requests: lazy imports, caches
    few = _unreachable_after(gateway.port, 5)
    many = _unreachable_after(gateway.port, 5 + REQUESTS)
    # Garbage that grows with the requests is a cycle per request (the response writer
    # holding its cycle made about 20 objects of garbage per request here).
    assert many - few < REQUESTS, (few, many)
