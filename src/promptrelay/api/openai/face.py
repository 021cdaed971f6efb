"""The OpenAI faces as plain ASGI: decode, make the one Messages call, encode.

    POST /v1/chat/completions   chat_request -> Gateway.messages -> chat_completion | ChatChunks
    GET  /v1/models             the upstream's list, readable by both SDKs, aliases added

Everything below the decode (keys, cache, coalescer, retries, breaker, telemetry) is the
request path every face shares; this module only translates. Errors leave in OpenAI's
shape with the status, `retry-after` and `x-should-retry` of the failure they stand for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from promptrelay.api.asgi import (
    JSON_CONTENT,
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_response,
    stream_response,
)
from promptrelay.api.hot import HotRoutes, Trace
from promptrelay.api.openai.chat_answer import chat_completion
from promptrelay.api.openai.chat_request import chat_request
from promptrelay.api.openai.chat_stream import ChatChunks
from promptrelay.api.openai.errors import send_openai_error, translate_error_body
from promptrelay.api.openai.models import models_list
from promptrelay.core.auth import Credentials, KeyResolver
from promptrelay.core.cache_control import parse_cache_control
from promptrelay.core.gateway import Gateway, MessagesCall, Reply
from promptrelay.core.providers import Providers
from promptrelay.core.request import json_object_or_none, parse_json_object
from promptrelay.core.sse import SseParser
from promptrelay.errors import NotFound, UpstreamError, UpstreamUnavailable
from promptrelay.settings import Settings

__all__ = ["OpenAIFace"]

log = logging.getLogger("promptrelay.api")

_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_UNCUT = b"the upstream stream ended before the answer was complete"


def _kept(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The pipeline's headers without the content type (the face sets its own)."""
    return [(name, value) for name, value in headers if name != b"content-type"]


class OpenAIFace:
    def __init__(
        self,
        settings: Settings,
        hot: HotRoutes,
        gateway: Gateway,
        keys: KeyResolver,
        providers: Providers,
    ) -> None:
        self._hot = hot
        self._gateway = gateway
        self._keys = keys
        self._providers = providers
        self._limit = settings.max_body_bytes
        self._version = settings.anthropic_version
        self._max_tokens = settings.default_max_tokens

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = "/v1/chat/completions"
        await self._hot.serve(route, self._chat, scope, receive, send, send_openai_error)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._hot.serve("/v1/models", self._models, scope, receive, send)

    # -- shared ----------------------------------------------------------------------------

    async def _decode(
        self, scope: Scope, receive: Receive, trace: Trace, route: str
    ) -> tuple[dict[bytes, bytes], Credentials, dict[str, Any]]:
        if scope["method"] != "POST":
            raise NotFound(f"use POST {route}")
        headers = request_headers(scope)
        creds = self._keys.resolve(headers)  # refuse a bad key before reading a large body
        raw = await read_body(scope, receive, self._limit)
        self._hot.received(trace, raw)
        body = parse_json_object(raw)
        await self._providers.refresh()
        return headers, creds, body

    def _model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            model = self._providers.default_model
        return self._providers.resolve(model)

    def _call(
        self, body: dict[str, Any], stream: bool, creds: Credentials, headers: dict[bytes, bytes]
    ) -> MessagesCall:
        sent = {**body, "stream": True} if stream else body
        return MessagesCall(
            body=body,
            raw=orjson.dumps(sent),
            stream=stream,
            creds=creds,
            version=self._version,
            control=parse_cache_control(headers.get(b"cache-control")),
            timeout=self._providers.timeout(str(body["model"])),
        )

    @staticmethod
    async def _send_json(send: Send, trace: Trace, reply: Reply, body: bytes) -> None:
        trace.status, trace.cache, trace.upstream = (
            reply.status,
            reply.cache,
            reply.upstream_seconds,
        )
        trace.first, trace.response_bytes = time.perf_counter(), len(body)
        await send_response(send, reply.status, [JSON_CONTENT, *_kept(reply.headers)], body)

    async def _send_failure(self, send: Send, trace: Trace, reply: Reply) -> None:
        await reply.aclose()
        await self._send_json(send, trace, reply, translate_error_body(reply.status, reply.body))

    async def _send_stream(
        self, send: Send, receive: Receive, trace: Trace, reply: Reply, chunks: ChatChunks
    ) -> None:
        assert reply.chunks is not None
        trace.status, trace.cache, trace.upstream = (
            reply.status,
            reply.cache,
            reply.upstream_seconds,
        )
        trace.first, trace.stream = time.perf_counter(), True
        headers = [_SSE, *_kept(reply.headers)]
        try:
            encoded = _encode(reply.chunks, chunks, trace)
            await stream_response(send, receive, reply.status, headers, encoded)
        finally:
            await reply.aclose()

    # -- chat completions ------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send, trace: Trace) -> None:
        headers, creds, body = await self._decode(scope, receive, trace, "/v1/chat/completions")
        request = chat_request(body, model=self._model(body), default_max_tokens=self._max_tokens)
        reply = await self._gateway.messages(
            self._call(request.body, request.stream, creds, headers)
        )
        if reply.status != 200:
            await self._send_failure(send, trace, reply)
            return
        created = int(time.time())
        if reply.chunks is not None:
            chunks = ChatChunks(
                created=created,
                include_usage=request.include_usage,
                json_answer=request.json_answer,
            )
            await self._send_stream(send, receive, trace, reply, chunks)
            return
        message = json_object_or_none(reply.body)
        if message is None:
            raise UpstreamUnavailable("the upstream answered 200 with a body that is not JSON")
        if request.stream:  # a stream asked for, a whole answer given: replay it as chunks
            raise UpstreamUnavailable("the upstream answered a stream request without a stream")
        answer = chat_completion(message, created=created, json_answer=request.json_answer)
        await self._send_json(send, trace, reply, orjson.dumps(answer))

    # -- models ----------------------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, trace: Trace) -> None:
        headers = request_headers(scope)
        creds = self._keys.resolve(headers)
        await self._providers.refresh()
        query = scope.get("query_string", b"").decode("latin-1")
        version = headers.get(b"anthropic-version")
        reply = await self._gateway.forward(
            "GET",
            f"/v1/models?{query}" if query else "/v1/models",
            b"",
            creds,
            version=version.decode("latin-1") if version else self._version,
            beta=None,
            content_type=None,
        )
        body = reply.body
        if reply.chunks is not None:
            body = b"".join([part async for part in reply.chunks])
            await reply.aclose()
        page = json_object_or_none(body) if reply.status == 200 else None
        if page is not None:
            first_page = "after_id=" not in query and "before_id=" not in query
            aliases = self._providers.config.aliases if first_page else {}
            body = orjson.dumps(models_list(page, aliases))
        await self._send_json(send, trace, reply, body)


async def _encode(
    upstream: AsyncIterator[bytes], chunks: ChatChunks, trace: Trace
) -> AsyncIterator[bytes]:
    """The upstream's Claude events as OpenAI chunks; a failure midway as an error event.

    The upstream is read to its end even after [DONE]: a shared (coalesced) stream and
    the cache store see the whole answer."""
    parser = SseParser()
    try:
        async for piece in upstream:
            out = [
                encoded for name, data in parser.feed(piece) for encoded in chunks.event(name, data)
            ]
            if out:
                joined = b"".join(out)
                trace.response_bytes += len(joined)
                yield joined
    except UpstreamError as error:
        log.warning("upstream stream failed midway: %s", error.message)
        if not chunks.done:
            yield chunks.error(error.type, error.message)
        return
    if not chunks.done:
        yield chunks.error("api_error", _UNCUT.decode())
