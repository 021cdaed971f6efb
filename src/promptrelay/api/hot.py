"""The hot routes as plain ASGI: POST /v1/messages, POST /api/generate, other /v1/*.

Each handler is a face of the pipeline: resolve credentials, read the bounded body, parse
once (orjson) into the pipeline's Ask, `prepare` and `run` it, encode the Reply.
GatewayErrors become Anthropic-shaped error responses here, once; nothing else leaves as
a 500 without a log line. Other /v1/* routes are the pipeline's pass-through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import quote

import orjson

from promptrelay.api.asgi import (
    JSON_CONTENT,
    ClientGone,
    Receive,
    Scope,
    Send,
    api_version,
    client_left,
    read_body,
    request_headers,
    send_error,
    send_response,
    stream_response,
)
from promptrelay.cache.keys import RawMemo
from promptrelay.core.auth import KeyResolver
from promptrelay.core.cache_control import parse_cache_control
from promptrelay.core.events import EventBus, RequestFinished, request_finished
from promptrelay.core.gateway import Reply
from promptrelay.core.generate import generate_answer, generate_ask
from promptrelay.core.pipeline import Ask, Pipeline
from promptrelay.core.request import (
    json_object_or_none,
    parse_json_object,
    validate_messages_body,
)
from promptrelay.core.sse import encode_event
from promptrelay.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamUnavailable,
)
from promptrelay.settings import Settings
from promptrelay.upstream.offline import OFFLINE_HEADER
from promptrelay.upstream.paths import canonical_target

__all__ = ["ErrorWriter", "HotRoutes", "Trace"]

log = logging.getLogger("promptrelay.api")

_NO_RETRY = (b"x-should-retry", b"false")


class _Trace:
    """What one request did, filled in along the way, emitted once as RequestFinished."""

    __slots__ = (
        "cache",
        "first",
        "model",
        "request_bytes",
        "response_bytes",
        "status",
        "stream",
        "template",
        "upstream",
    )

    def __init__(self) -> None:
        self.status = 0
        self.cache = ""
        self.first = 0.0  # perf_counter when the status line went out
        self.upstream = 0.0
        self.request_bytes = 0
        self.response_bytes = 0
        self.stream = False
        self.model = ""
        self.template = ""


_Handler = Callable[[Scope, Receive, Send, _Trace], Awaitable[None]]
# Writes a GatewayError in a face's own error shape (Anthropic's by default).
ErrorWriter = Callable[[Send, GatewayError, list[tuple[bytes, bytes]]], Awaitable[None]]
Trace = _Trace  # for faces built on `serve` (the OpenAI ones)


class HotRoutes:
    def __init__(
        self, settings: Settings, pipeline: Pipeline, keys: KeyResolver, events: EventBus
    ) -> None:
        self._pipeline = pipeline
        self._keys = keys
        self._events = events
        self.in_flight = 0  # requests inside a handler now
        self.in_flight_bytes = 0  # their request bodies, held in memory
        self._limit = settings.max_body_bytes
        # /v1/messages bodies parsed and validated, by their raw bytes: read, never changed
        self._bodies: RawMemo[dict[str, Any]] = RawMemo()

    # The routes hand back `_serve`'s coroutine rather than awaiting it in one of their
    # own: a frame fewer that every resumption of the request would pass through.

    def messages(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        return self._serve("/v1/messages", self._messages, scope, receive, send)

    def generate(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        return self._serve("/api/generate", self._generate, scope, receive, send)

    def forward(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        return self._serve("/v1/*", self._forward, scope, receive, send)

    def serve(
        self,
        route: str,
        handler: _Handler,
        scope: Scope,
        receive: Receive,
        send: Send,
        write_error: ErrorWriter = send_error,
    ) -> Coroutine[Any, Any, None]:
        """Run `handler` with the bookkeeping every hot route shares: in-flight counts,
        GatewayErrors written once (by `write_error`), one RequestFinished event."""
        return self._serve(route, handler, scope, receive, send, write_error)

    async def _serve(
        self,
        route: str,
        handler: _Handler,
        scope: Scope,
        receive: Receive,
        send: Send,
        write_error: ErrorWriter = send_error,
    ) -> None:
        started = time.perf_counter()
        trace = _Trace()
        self.in_flight += 1
        try:
            await handler(scope, receive, send, trace)
        except ClientGone:
            trace.status = 499
        except GatewayError as error:
            await self._send_error(send, error, trace, write_error)
        except Exception:  # a bug: logged and counted as a 500, never a bare stack trace
            log.exception("%s failed unexpectedly", route)
            if trace.first:
                trace.status = 500
                raise  # the status line is out: the server can only cut the connection
            bug = GatewayError("internal error; see the log")
            await self._send_error(send, bug, trace, write_error)
        finally:
            self.in_flight -= 1
            self.in_flight_bytes -= trace.request_bytes
            if RequestFinished in self._events.wanted:
                ended = time.perf_counter()
                self._events.emit(
                    request_finished(
                        (
                            route,
                            trace.status,
                            trace.cache,
                            ended - started,
                            (trace.first or ended) - started,
                            trace.upstream,
                            trace.request_bytes,
                            trace.response_bytes,
                            trace.stream,
                            trace.model,
                            trace.template,
                        )
                    )
                )

    @staticmethod
    async def _send_error(
        send: Send, error: GatewayError, trace: _Trace, write_error: ErrorWriter = send_error
    ) -> None:
        trace.status, trace.first = error.status, time.perf_counter()
        trace.response_bytes = len(error.body())
        await write_error(send, error, _error_headers(error))

    def received(self, trace: _Trace, raw: bytes) -> None:
        """Count a request body read by a face built on `serve`."""
        self._received(trace, raw)

    def _received(self, trace: _Trace, raw: bytes) -> None:
        trace.request_bytes = len(raw)
        self.in_flight_bytes += trace.request_bytes

    async def _messages(self, scope: Scope, receive: Receive, send: Send, trace: _Trace) -> None:
        if scope["method"] != "POST":
            raise NotFound("use POST /v1/messages")
        headers = request_headers(scope)
        creds = self._keys.resolve(headers)  # refuse a bad key before reading a large body
        raw = await read_body(scope, receive, self._limit, headers)
        self._received(trace, raw)
        body = self._bodies.get((raw,))
        if body is None:
            body = parse_json_object(raw)
            validate_messages_body(body)
            self._bodies.put((raw,), body)
        version, beta = api_version(headers)
        control = parse_cache_control(headers.get(b"cache-control"))
        prepared = await self._pipeline.prepare(Ask(creds, body, raw, version, beta, control))
        trace.model = prepared.call.body["model"]
        await _send_reply(send, receive, await self._pipeline.run(prepared.call), trace)

    async def _generate(self, scope: Scope, receive: Receive, send: Send, trace: _Trace) -> None:
        if scope["method"] != "POST":
            raise NotFound("use POST /api/generate")
        started = time.perf_counter()
        headers = request_headers(scope)
        creds = self._keys.resolve(headers)
        raw = await read_body(scope, receive, self._limit, headers)
        self._received(trace, raw)
        version, beta = api_version(headers)
        control = parse_cache_control(headers.get(b"cache-control"))
        ask = generate_ask(raw, creds, version=version, beta=beta, control=control)
        prepared = await self._pipeline.prepare(ask)
        trace.model = str(prepared.call.body["model"])
        if prepared.template is not None:
            trace.template = prepared.template.name
        reply = await self._pipeline.run(prepared.call)
        trace.status, trace.cache = reply.status, reply.cache
        trace.upstream = reply.upstream_seconds
        if reply.status != 200:
            await _send_whole(send, receive, trace, reply.headers, reply.body)
            return
        message = json_object_or_none(reply.body)
        if message is None:
            raise UpstreamUnavailable("the upstream answered 200 with a body that is not JSON")
        answer = generate_answer(
            message,
            cached=reply.cache == "HIT",
            offline=OFFLINE_HEADER in reply.headers,
            latency_ms=(time.perf_counter() - started) * 1000,
            template=prepared.template,
        )
        cache_header = (b"x-cache", reply.cache.encode())
        await _send_whole(send, receive, trace, [JSON_CONTENT, cache_header], orjson.dumps(answer))

    async def _forward(self, scope: Scope, receive: Receive, send: Send, trace: _Trace) -> None:
        # Judged on the raw path, before anything else: a path that could leave /v1/ on
        # the upstream is refused here and never reaches the upstream (upstream/paths.py).
        target = canonical_target(_raw_path(scope), scope.get("query_string", b""))
        headers = request_headers(scope)
        creds = self._keys.resolve(headers)
        raw = await read_body(scope, receive, self._limit, headers)
        self._received(trace, raw)
        content_type = headers.get(b"content-type")
        if raw and content_type and content_type.startswith(b"application/json"):
            # same guard as /v1/messages: the upstream is set by configuration only
            body = parse_json_object(raw)
            for name in ("api_base", "base_url"):
                if name in body:
                    raise InvalidRequest(
                        f"{name}: not allowed; the upstream is set by configuration"
                    )
        version, beta = api_version(headers)
        reply = await self._pipeline.passthrough(
            scope["method"],
            target,
            raw,
            creds,
            version=version,
            beta=beta,
            content_type=content_type.decode("latin-1") if content_type else None,
        )
        await _send_reply(send, receive, reply, trace)


def _raw_path(scope: Scope) -> bytes:
    """The path as the request line had it; re-encoded from `path` for a server that
    gives no `raw_path` (then an encoded slash cannot be told apart, but '..' still can)."""
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        return raw
    return quote(scope["path"], safe="/!$&'()*+,;=:@").encode("ascii")


def _error_headers(error: GatewayError) -> list[tuple[bytes, bytes]]:
    # Our own upstream failures are final: tell SDKs not to multiply retries; nor should
    # they retry a rate limit for minutes (SDKs would honour a long retry-after for hours).
    if isinstance(error, UpstreamError):
        return [_NO_RETRY]
    if isinstance(error, RateLimited) and (error.retry_after or 0) > 60:
        return [_NO_RETRY]
    return []


async def _send_whole(
    send: Send,
    receive: Receive,
    trace: _Trace,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    """Send a whole answer; one that waited for the upstream first checks that its client
    is still there, since uvicorn drops what is sent to a client that left (counted 499,
    not as the upstream's status). A hit is answered at once: it skips the check."""
    if trace.cache != "HIT" and client_left(receive):
        raise ClientGone
    trace.first, trace.response_bytes = time.perf_counter(), len(body)
    await send_response(send, trace.status, headers, body)


async def _send_reply(send: Send, receive: Receive, reply: Reply, trace: _Trace) -> None:
    trace.status, trace.cache, trace.upstream = reply.status, reply.cache, reply.upstream_seconds
    if reply.chunks is None:
        await _send_whole(send, receive, trace, reply.headers, reply.body)
        return
    trace.stream = True
    try:
        # stream_response's watcher cannot see a client that left while the upstream was
        # still on its way: its first look comes after the first chunk has gone out.
        if trace.cache != "HIT" and client_left(receive):
            raise ClientGone
        trace.first = time.perf_counter()
        await stream_response(
            send,
            receive,
            reply.status,
            reply.headers,
            reply.chunks,
            counted=trace,
            failed=_failed_midway,
        )
    finally:
        await reply.aclose()


def _failed_midway(error: UpstreamError) -> bytes:
    """After the first byte the status is sent: a failure becomes an SSE error event.
    The client gets the type and a fixed sentence; the HTTP client's own text (its
    exception, a URL) stays in our log."""
    log.warning("upstream stream failed midway: %s", error.message)
    message = f"the upstream stream failed midway ({error.type}); see the gateway's log"
    detail = {"type": error.type, "message": message}
    return encode_event("error", {"type": "error", "error": detail})
