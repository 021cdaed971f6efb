"""The upstream's answer headers passed on to the client: chosen by name (a plan kept per
sequence of names), lower-cased, in the upstream's order, with their values as sent."""

from __future__ import annotations

import pytest

from promptrelay.upstream.client import kept_response_headers

CASES = [
    [],
    [(b"Date", b"x"), (b"Server", b"y")],
    [(b"request-id", b"req_1")],
    [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"12"),
        (b"Request-Id", b"req_2"),
        (b"anthropic-ratelimit-requests-limit", b"50"),
        (b"Anthropic-Organization-Id", b"org"),
        (b"x-should-retry", b"true"),
        (b"Retry-After", b"3"),
        (b"Set-Cookie", b"a=1"),
        (b"transfer-encoding", b"chunked"),
    ],
    [(b"anthropic-beta", b"a"), (b"anthropic-beta", b"b"), (b"date", b"d")],
]


def _expected(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    names = {b"content-type", b"request-id", b"x-request-id", b"retry-after"}
    names |= {b"retry-after-ms", b"content-disposition"}
    prefixes = (b"anthropic-", b"x-should-retry")
    return [
        (name.lower(), value)
        for name, value in raw
        if name.lower() in names or name.lower().startswith(prefixes)
    ]


@pytest.mark.parametrize("raw", CASES)
def test_kept_headers(raw: list[tuple[bytes, bytes]]) -> None:
    for _ in range(2):  # the plan made, then the plan reused
        assert kept_response_headers(tuple(raw)) == _expected(raw)


def test_the_same_names_with_other_values() -> None:
    first = ((b"request-id", b"req_1"), (b"date", b"d1"), (b"content-type", b"a"))
    second = ((b"request-id", b"req_2"), (b"date", b"d2"), (b"content-type", b"b"))
    assert kept_response_headers(first) == [(b"request-id", b"req_1"), (b"content-type", b"a")]
    assert kept_response_headers(second) == [(b"request-id", b"req_2"), (b"content-type", b"b")]
