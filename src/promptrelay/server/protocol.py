"""uvicorn's httptools protocol with bounded heads, slow-client deadlines and a connection cap.

httptools (llhttp) parses as bytes arrive and keeps nothing itself; uvicorn collects the
URL and headers it reports without bound and has no deadline on a head or a body. This
subclass counts the bytes fed to the parser while a head is arriving and refuses the
request as soon as they pass `max_header_bytes`, so a head is never held whole beyond the
cap. One timer per connection (the watch) enforces the phase deadlines of
`promptrelay.server.limits`; the per-request work on the hot path is a few attribute
stores and a clock read.

A whole answer goes out in one system call: each request's cycle writes through a
`_Writer`, which holds the head of a response with a content-length until its body is
written (uvicorn alone writes a head and its body with two calls, two system calls on the
hit path). A streamed answer's head is written at once, as before, and its body chunks can be
written without uvicorn's `send` (`chunk_writer`): framed here and written straight to
the transport, synchronously, by whichever task has them (a shared stream's producer).
The head itself is checked and joined by `promptrelay.server.cycle` (the same checks as
uvicorn's, without a Python loop over the headers).

Every refusal is answered in the error shape of `promptrelay.errors` when nothing of a
response went out yet, then the connection is closed gracefully: the write side is shut
after the answer and what the client still sends is read and dropped for `linger` seconds,
so the client reads the answer instead of a reset. Beyond the connection cap only the
first `lingering_refusals` get that linger; the rest are closed once their 503 is written.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from promptrelay.errors import (
    GatewayError,
    HeadersTooLarge,
    InvalidRequest,
    RequestTimeout,
    TooManyConnections,
)
from promptrelay.server.cycle import cycles_built_here
from promptrelay.server.limits import Phase, ServerLimits, time_left

__all__ = ["ChunkWriter", "GatewayProtocol", "chunk_writer"]

_HEAD, _BODY, _IDLE = Phase.HEAD, Phase.BODY, Phase.IDLE


class _Writer:
    """The transport as one request's cycle sees it. The head of a response whose body
    length is declared (content-length) is held until the first body write, and goes out
    with it in one call; everything else is written at once (a body sent in several
    chunks, a file say, is never gathered).

    The cycle is let go at that first write: the cycle holds its writer (as its
    transport), and the reference back made every request's objects a reference cycle
    that only a collection could free (the tail at 1,024 concurrent, docs/benchmarks.md)."""

    __slots__ = ("_cycle", "_held", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle: RequestResponseCycle | None = cycle  # until the head is written
        self._held = b""

    def write(self, data: bytes) -> None:
        if self._held:
            data, self._held = self._held + data, b""
        elif (cycle := self._cycle) is not None:  # the head: uvicorn writes it in one call
            self._cycle = None
            if cycle.chunked_encoding is False and cycle.expected_content_length > 0:
                self._held = data  # the head: its declared body is still to come
                return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            if not self._transport.is_closing():  # a lost connection: nobody to read it
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class ChunkWriter:
    """The body chunks of one chunked answer, written at once: `write` frames a chunk as
    uvicorn's `send` would and writes it, or returns False when that would mean waiting
    (flow control paused writing: the client reads slowly) or the connection is closing;
    then the caller sends that chunk through `send`, which waits or drops it. The end of
    the body (the empty last chunk) goes through `send` too, which completes the cycle.
    `written` counts the body bytes written here."""

    __slots__ = ("_flow", "_transport", "written")

    def __init__(self, transport: asyncio.Transport, flow: FlowControl) -> None:
        self._transport = transport
        self._flow = flow
        self.written = 0

    def write(self, chunk: bytes) -> bool:
        if self._flow.write_paused or self._transport.is_closing():
            return False
        if chunk:  # an empty chunk would end the body
            self._transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            self.written += len(chunk)
        return True


def chunk_writer(send: Any) -> ChunkWriter | None:
    """A ChunkWriter for the answer `send` (an ASGI send) is sending, once its head is out
    with chunked framing; None for any other answer, server or a wrapped `send`."""
    cycle = getattr(send, "__self__", None)
    if not isinstance(cycle, RequestResponseCycle):  # ours are server/cycle.py's subclass
        return None
    writer: object = cycle.transport
    if type(writer) is not _Writer or cycle.chunked_encoding is not True:
        return None
    if not cycle.response_started or cycle.response_complete or cycle.disconnected:
        return None
    return ChunkWriter(writer._transport, cycle.flow)


class GatewayProtocol(HttpToolsProtocol):
    """Built per connection by uvicorn: `functools.partial(GatewayProtocol, limits=...)`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._phase = _HEAD
        self._since = 0.0  # start of the head, or the last body chunk
        self._head_size = 0  # bytes fed to the parser since the last complete head
        self._heads = 0  # complete heads so far
        self._refused = False  # an error answer is out: input is dropped
        self._timer: TimerHandle | None = None  # the watch, or the linger after a refusal

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (override) uvicorn narrows BaseTransport to Transport in its own signature.
        super().connection_made(transport)
        self._since = self.loop.time()
        over = len(self.connections) - self.limits.max_connections
        if over > 0:
            self._refuse(
                TooManyConnections(
                    f"the gateway holds its maximum of {self.limits.max_connections} "
                    "client connections; retry shortly",
                    retry_after=self.limits.retry_after,
                ),
                linger=over <= self.limits.lingering_refusals,
            )
            return
        self._timer = self.loop.call_later(self.limits.watch_interval, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        phase = self._phase
        if phase is _BODY:
            self._since = self.loop.time()
        else:
            if phase is _IDLE:  # bytes after a complete request start the next head
                self._phase = _HEAD
                self._since = self.loop.time()
            room = self.limits.max_header_bytes - self._head_size
            if len(data) > room:
                self._feed_past_cap(data, room)
                return
            self._head_size += len(data)
        super().data_received(data)

    def _feed_past_cap(self, data: bytes, room: int) -> None:
        """Feed what fits under the cap; refuse unless the head ended within it."""
        heads = self._heads
        if room:
            self.data_received(data[:room])
        if self._refused:
            return
        if self._heads == heads:
            self._refuse(
                HeadersTooLarge(
                    f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
                )
            )
            return
        self.data_received(data[room:])

    # Parser callbacks: they track the phase, then do uvicorn's work. A head's start and a
    # body's progress are seen in data_received, which saves two overrides per request.

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._head_size = 0
        self._phase = _BODY
        self._since = self.loop.time()
        with cycles_built_here:
            super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _Writer):
            cycle.transport = _Writer(self.transport, cycle)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._flush()  # a HEAD answer's head: uvicorn writes no body after it
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this when httptools refuses the bytes (request line, header,
        # content-length, chunked framing); its own answer is plain text.
        self._refuse(
            InvalidRequest(
                "malformed HTTP request (request line, a header, content-length or chunked framing)"
            )
        )

    def _watch(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._phase is _BODY and self.flow.read_paused:
            # Reading is paused because the app has not taken the body yet: the client
            # is not silent, we are not listening.
            self._since = now
        left = time_left(self._phase, self._since, now, self.limits)
        if left is not None and left <= 0:
            self._expire()
            return
        interval = self.limits.watch_interval
        delay = interval if left is None else min(left, interval)
        self._timer = self.loop.call_later(delay, self._watch)

    def _expire(self) -> None:
        if self._phase is _HEAD:
            message = f"the request head did not arrive within {self.limits.head_timeout:g} s"
        else:
            message = f"the request body stopped arriving for {self.limits.body_idle_timeout:g} s"
        self._refuse(RequestTimeout(message))

    def _refuse(self, error: GatewayError, *, linger: bool = True) -> None:
        """Answer `error` where no response is under way, and end the connection
        (without `linger`: as soon as the answer is written)."""
        self._refused = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        cycle = self.cycle
        if self._phase is _BODY and cycle is not None:
            # The app waits for this body: it now reads http.disconnect and its sends
            # are dropped, so the error below is the only answer.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self._flush()
                self.transport.close()
                return
        elif cycle is not None and not cycle.response_complete:
            # A pipelined head failed while the previous answer is still going out: that
            # answer finishes, then the connection closes.
            cycle.keep_alive = False
            return
        self._answer_and_close(error, linger)

    def _flush(self) -> None:
        """Write what the current cycle holds, before the protocol writes itself."""
        writer: object = self.cycle.transport if self.cycle is not None else None
        if type(writer) is _Writer:
            writer.flush()

    def _answer_and_close(self, error: GatewayError, linger: bool) -> None:
        self._flush()  # what the app wrote goes first
        self.transport.write(self._error_response(error))
        if not linger:
            self.transport.close()  # after the buffered answer is flushed
            return
        self.flow.resume_reading()  # keep reading (and dropping) until the client is done
        if self.transport.can_write_eof():
            self.transport.write_eof()  # eof_received then closes the transport
        self._timer = self.loop.call_later(self.limits.linger, self.transport.close)

    def _error_response(self, error: GatewayError) -> bytes:
        body = error.body()
        parts = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        parts.append(b"content-type: application/json\r\n")
        parts.append(b"content-length: %d\r\n" % len(body))
        if error.retry_after is not None:
            parts.append(b"retry-after: %d\r\n" % round(error.retry_after))
        parts += [b"connection: close\r\n\r\n", body]
        return b"".join(parts)
