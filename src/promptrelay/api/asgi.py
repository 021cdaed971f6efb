"""Plain ASGI plumbing: read a bounded body, read the API version, send bytes or a stream.

The management routes use the same body reader (on Starlette's `request.receive`).

The hot routes bypass FastAPI's router: answering a small cached body, a FastAPI route
did ~9,000 req/s on this project's 2-core machine where a plain ASGI callable did
~30,000. These helpers are all they need.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, Protocol, cast

from promptrelay.errors import GatewayError, PayloadTooLarge, UpstreamError
from promptrelay.server.protocol import ChunkWriter, chunk_writer

__all__ = [
    "ClientGone",
    "Counted",
    "Forwarding",
    "Receive",
    "Scope",
    "Send",
    "api_version",
    "client_left",
    "read_body",
    "request_headers",
    "send_error",
    "send_response",
    "stream_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CONTENT = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before the answer was complete."""


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers lower-case header names. Repeated headers: the last one wins, which
    # is fine for the few we read (keys, versions, cache-control, content-length).
    return dict(scope["headers"])


def api_version(headers: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """`anthropic-version` and `anthropic-beta` as the client sent them (None: absent;
    the pipeline applies ANTHROPIC_VERSION), forwarded verbatim."""
    version = headers.get(b"anthropic-version")
    beta = headers.get(b"anthropic-beta")
    return (
        version.decode("latin-1") if version else None,
        beta.decode("latin-1") if beta else None,
    )


async def read_body(
    scope: Scope, receive: Receive, limit: int, headers: dict[bytes, bytes] | None = None
) -> bytes:
    """The whole request body, refusing more than `limit` bytes before reading them
    (`headers`: the request's, when the caller has them as a dict already)."""
    if headers is None:
        headers = request_headers(scope)
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body is {int(declared)} bytes; the limit is {limit} (MAX_BODY_BYTES)"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes (MAX_BODY_BYTES)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def client_left(receive: Receive) -> bool:
    """Whether the client has already hung up, asked without waiting and without a task.

    Call it only once the body is read: then the one message `receive()` can have ready
    is `http.disconnect`. The coroutine is stepped once by hand; if it would wait (the
    client is still there) it is closed before it suspends anyone. Starlette's
    `is_disconnected` asks the same question with a cancelled scope; this costs no task
    and no turn of the loop, so every non-streamed answer can afford it.
    """
    pending = receive()
    if not isinstance(pending, Coroutine):
        return False  # not a coroutine: cannot be asked without awaiting it
    try:
        pending.send(None)
    except StopIteration as done:
        return bool(done.value and done.value.get("type") == "http.disconnect")
    pending.close()
    return False


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """A whole body, framed by content-length (no chunked framing to build or parse)."""
    headers = [*headers, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [JSON_CONTENT, *extra]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    await send_response(send, error.status, headers, error.body())


class Counted(Protocol):
    response_bytes: int


class Forwarding(Protocol):
    """Chunks that can also be handed to a synchronous writer as they come
    (core/coalesce.py `Subscription.forward`): no wake-up of the reading task per chunk."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def forward(self, write: Callable[[bytes], bool]) -> None: ...


async def stream_response(
    send: Send,
    receive: Receive,
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
    *,
    counted: Counted | None = None,
    failed: Callable[[UpstreamError], bytes] | None = None,
) -> None:
    """Forward chunks as they arrive. Raises ClientGone when the client leaves midway.

    uvicorn's `send` silently drops data once the client is gone, so a watcher on
    `receive()` (which yields http.disconnect then) tells us to stop pulling upstream.
    `counted.response_bytes` grows by each chunk taken; with `failed`, an UpstreamError
    midway ends the stream with the chunk `failed` makes of it (the status is out).
    Both are done here, in the one loop, rather than in a generator around `chunks`.
    Chunks that can be forwarded (`Forwarding`), under GatewayProtocol, are written by
    its ChunkWriter from the task that has them, and through `send` only when it waits.
    """
    gone = asyncio.ensure_future(receive())
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        forwards = getattr(chunks, "forward", None) is not None
        direct = chunk_writer(send) if forwards else None
        try:
            if direct is not None:
                await _forward(cast(Forwarding, chunks), direct, send, gone, counted)
            else:
                async for chunk in chunks:
                    if counted is not None:
                        counted.response_bytes += len(chunk)
                    if gone.done():
                        raise ClientGone
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as error:
            if failed is None:
                raise
            last = failed(error)
            if counted is not None:
                counted.response_bytes += len(last)
            if gone.done():
                raise ClientGone from None
            await send({"type": "http.response.body", "body": last, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        gone.cancel()


async def _forward(
    chunks: Forwarding,
    direct: ChunkWriter,
    send: Send,
    gone: asyncio.Future[Message],
    counted: Counted | None,
) -> None:
    """`stream_response`'s loop for Forwarding chunks: written by `direct` while it can,
    one chunk through `send` whenever it cannot (then back to `direct`)."""
    try:
        while True:
            if not gone.done():
                await chunks.forward(direct.write)
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            if counted is not None:
                counted.response_bytes += len(chunk)
            if gone.done():
                raise ClientGone
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        if counted is not None:
            counted.response_bytes += direct.written
