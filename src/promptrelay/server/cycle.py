"""uvicorn's request cycle with the response head written in C-level passes, and the one
body of a content-length answer written without uvicorn's general case.

uvicorn's `send` checks each response header with two regular-expression searches and
lower-cases and compares it in a Python loop: on a miss, whose answer carries the
upstream's request-id and anthropic-* headers, that loop was the costliest function of
the request outside aiohttp (bench/miss_calls.py). `_Cycle.send` refuses the same
characters, found in one pass over all the names and one over all the values with
`bytes.translate` (each of uvicorn's patterns is a class of single bytes, so the bytes it
allows are derived from it here, and joining changes nothing it finds; a search costs
per byte scanned, so one over everything cost nearly as much as the sixteen of a miss),
and joins the head with `bytes.join` over `map`. Any head it does not cover exactly as
uvicorn would (upper-case or repeated names, `transfer-encoding`, `connection`, a bad
character, a paused write, access logging) goes through uvicorn's own `send`, which
then also raises its own errors.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

__all__ = ["cycles_built_here"]

_NAME, _VALUE = itemgetter(0), itemgetter(1)
_LINE = b": ".join
_CLOSE = b"connection: close\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"
_NO_BODY = (204, 304)
# every byte uvicorn's patterns allow in a name and in a value
_NAME_BYTES = bytes(b for b in range(256) if not HEADER_RE.search(bytes([b])))
_VALUE_BYTES = bytes(b for b in range(256) if not HEADER_VALUE_RE.search(bytes([b])))
_NAMES: dict[bytes, bool] = {}  # joined names -> _plain_names
_NAMES_MAX = 256


class _Cycle(RequestResponseCycle):
    async def send(self, message: Any) -> None:
        if self.flow.write_paused or self.disconnected or self.response_complete:
            await super().send(message)
        elif not self.response_started:
            if (
                message["type"] != "http.response.start"
                or self.access_log
                or not self._head(message)
            ):
                await super().send(message)
        elif not self._whole_body(message):
            await super().send(message)

    def _whole_body(self, message: Any) -> bool:
        """The one body of a content-length answer, as uvicorn writes it; False (nothing
        done) for any other body message."""
        if (
            message["type"] != "http.response.body"
            or self.chunked_encoding is not False
            or message.get("more_body", False)
            or self.scope["method"] == "HEAD"
        ):
            return False
        body = message.get("body", b"")
        if len(body) != self.expected_content_length:
            return False  # uvicorn raises its own error for it
        self.expected_content_length = 0
        self.transport.write(body)
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True

    def _head(self, message: Any) -> bool:
        """Write the head as uvicorn would; False (nothing done) where it must decide."""
        given = message.get("headers", ())
        if type(given) is not list and type(given) is not tuple:
            return False  # any other iterable is read once, by uvicorn
        headers = [*self.default_headers, *given]
        names = b"".join(map(_NAME, headers))
        fields = dict(headers)
        if (
            len(fields) != len(headers)
            or b"transfer-encoding" in fields
            or b"connection" in fields
            or not _plain_names(names)
            or b"".join(map(_VALUE, headers)).translate(None, _VALUE_BYTES)
        ):
            return False
        status = message["status"]
        self.response_started = True
        self.waiting_for_100_continue = False
        length = fields.get(b"content-length")
        if length is not None:
            self.expected_content_length = int(length.decode())
            self.chunked_encoding = False
        content = [STATUS_LINE[status], b"\r\n".join(map(_LINE, headers))]
        if headers:
            content.append(b"\r\n")
        if not self.keep_alive:
            content.append(_CLOSE)
        if length is None and self.scope["method"] != "HEAD" and status not in _NO_BODY:
            self.chunked_encoding = True
            content.append(_CHUNKED)
        content.append(b"\r\n")
        self.transport.write(b"".join(content))
        return True


def _plain_names(names: bytes) -> bool:
    """Whether the joined names are all lower-case and hold no byte uvicorn refuses; kept
    per sequence of names (an answer's names repeat, its values do not)."""
    plain = _NAMES.get(names)
    if plain is None:
        plain = names == names.lower() and not names.translate(None, _NAME_BYTES)
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[names] = plain
    return plain


class _BuiltHere:
    """`with cycles_built_here:` uvicorn's protocol builds its request cycles from
    `_Cycle` inside.

    uvicorn names the class where it builds a cycle (`on_headers_complete`), so the name
    is bound to `_Cycle` around that synchronous call and put back after it: nothing else
    runs in between. Setting `__class__` on a cycle uvicorn built instead turned its
    attributes into a dictionary (CPython 3.11 keeps them inline only for the class that
    made them): +12,800 instructions of dictionary lookups per miss, under callgrind. A
    plain object, not `contextlib.contextmanager`: that costs ~70 bytecodes a request."""

    __slots__ = ()

    def __enter__(self) -> None:
        httptools_impl.RequestResponseCycle = _Cycle  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        httptools_impl.RequestResponseCycle = RequestResponseCycle  # type: ignore[misc]


cycles_built_here = _BuiltHere()
