"""The OpenAI faces as plain ASGI: decode, make the one Messages call, encode.

    POST /v1/chat/completions   chat_request -> Gateway.messages -> chat_completion | ChatChunks
    POST /v1/responses          responses_request -> Gateway.messages -> response_object |
                                ResponseEvents; stored (ResponseStore) unless store: false
    GET  /v1/responses/{id}     a stored response of the caller's namespace
    GET  /v1/models[/{id}]      the upstream's list (or model), readable by both SDKs,
                                aliases added to the list

Everything below the decode (keys, cache, coalescer, retries, breaker, telemetry) is the
request path every face shares; this module only translates. Errors leave in OpenAI's
shape with the status, `retry-after` and `x-should-retry` of the failure they stand for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import quote

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
from promptrelay.api.openai.claude_events import ClaudeFrames
from promptrelay.api.openai.content import JSON_TOOL
from promptrelay.api.openai.errors import send_openai_error, translate_error_body
from promptrelay.api.openai.models import model_item, models_list
from promptrelay.api.openai.responses_answer import ResponseShape, response_object
from promptrelay.api.openai.responses_request import ResponsesRequest, responses_request
from promptrelay.api.openai.responses_stream import ResponseEvents
from promptrelay.core.auth import Credentials, KeyResolver
from promptrelay.core.cache_control import parse_cache_control
from promptrelay.core.gateway import MessagesCall, Reply
from promptrelay.core.pipeline import Ask, Pipeline
from promptrelay.core.providers import Providers
from promptrelay.core.request import json_object_or_none, parse_json_object
from promptrelay.core.responses_store import ResponseStore
from promptrelay.core.sse import MessageAssembler
from promptrelay.core.thinking_store import ThinkingStore
from promptrelay.errors import NotFound, UpstreamError, UpstreamUnavailable
from promptrelay.settings import Settings
from promptrelay.upstream.paths import canonical_target

__all__ = ["OpenAIFace"]

log = logging.getLogger("promptrelay.api")

_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_UNCUT = b"the upstream stream ended before the answer was complete"
_PCHAR = "/!$&'()*+,;=:@"  # kept as they are when a server gives no raw_path


class _Encoder(Protocol):
    """ChatChunks or ResponseEvents: Claude events in, the face's SSE bytes out."""

    @property
    def done(self) -> bool: ...

    def feed(self, events: list[tuple[str, bytes]]) -> list[bytes]: ...

    def error(self, kind: str, message: str) -> list[bytes]: ...


def _kept(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The pipeline's headers without the content type (the face sets its own)."""
    return [(name, value) for name, value in headers if name != b"content-type"]


class OpenAIFace:
    def __init__(
        self,
        settings: Settings,
        hot: HotRoutes,
        pipeline: Pipeline,
        keys: KeyResolver,
        providers: Providers,
        store: ResponseStore,
        thinking: ThinkingStore,
    ) -> None:
        self._hot = hot
        self._store = store
        self._thinking = thinking
        self._pipeline = pipeline
        self._keys = keys
        self._providers = providers
        self._limit = settings.max_body_bytes
        self._max_tokens = settings.default_max_tokens

    async def chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = "/v1/chat/completions"
        await self._hot.serve(route, self._chat, scope, receive, send, send_openai_error)

    async def responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = "/v1/responses"
        await self._hot.serve(route, self._responses, scope, receive, send, send_openai_error)

    async def stored_response(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = "/v1/responses/{id}"
        await self._hot.serve(route, self._stored, scope, receive, send, send_openai_error)

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

    async def _call(
        self,
        body: dict[str, Any],
        stream: bool,
        creds: Credentials,
        headers: dict[bytes, bytes],
        trace: Trace,
    ) -> MessagesCall:
        """The translated body as the pipeline's one internal call (the default
        anthropic-version, so an Anthropic client's twin request shares its cache key)."""
        sent = {**body, "stream": True} if stream else body
        control = parse_cache_control(headers.get(b"cache-control"))
        prepared = await self._pipeline.prepare(Ask(creds, sent, control=control))
        trace.model = str(prepared.call.body["model"])
        return prepared.call

    @staticmethod
    def _traced(trace: Trace, reply: Reply) -> None:
        trace.status, trace.cache = reply.status, reply.cache
        trace.upstream, trace.first = reply.upstream_seconds, time.perf_counter()

    async def _send_json(self, send: Send, trace: Trace, reply: Reply, body: bytes) -> None:
        self._traced(trace, reply)
        trace.response_bytes = len(body)
        await send_response(send, reply.status, [JSON_CONTENT, *_kept(reply.headers)], body)

    async def _send_failure(self, send: Send, trace: Trace, reply: Reply) -> None:
        await reply.aclose()
        await self._send_json(send, trace, reply, translate_error_body(reply.status, reply.body))

    async def _send_stream(
        self,
        send: Send,
        receive: Receive,
        trace: Trace,
        reply: Reply,
        encoder: _Encoder,
        finished: Callable[[], Awaitable[None]] | None = None,
        fold: MessageAssembler | None = None,
    ) -> None:
        assert reply.chunks is not None
        self._traced(trace, reply)
        trace.stream = True
        headers = [_SSE, *_kept(reply.headers)]
        try:
            encoded = _encode(reply.chunks, encoder, trace, finished, fold)
            await stream_response(send, receive, reply.status, headers, encoded)
        finally:
            await reply.aclose()

    @staticmethod
    def _message(reply: Reply) -> dict[str, Any]:
        message = json_object_or_none(reply.body)
        if message is None:
            raise UpstreamUnavailable("the upstream answered 200 with a body that is not JSON")
        return message

    # -- chat completions ------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send, trace: Trace) -> None:
        headers, creds, body = await self._decode(scope, receive, trace, "/v1/chat/completions")
        request = chat_request(body, model=self._model(body), default_max_tokens=self._max_tokens)
        thinking = "thinking" in request.body
        if thinking:
            await self._restore_thinking(creds.namespace, request.body["messages"])
        call = await self._call(request.body, request.stream, creds, headers, trace)
        reply = await self._pipeline.run(call)
        if reply.status != 200:
            await self._send_failure(send, trace, reply)
            return
        created = int(time.time())
        shared = creds.upstream_key is not None
        if reply.chunks is not None:
            chunks = ChatChunks(
                created=created,
                include_usage=request.include_usage,
                json_answer=request.json_answer,
            )
            fold = MessageAssembler() if thinking else None

            async def finished() -> None:
                if fold is not None and fold.complete and fold.message is not None:
                    await self._thinking.keep(creds.namespace, fold.message, shared=shared)

            await self._send_stream(send, receive, trace, reply, chunks, finished, fold)
            return
        message = self._message(reply)
        if thinking:
            await self._thinking.keep(creds.namespace, message, shared=shared)
        answer = chat_completion(message, created=created, json_answer=request.json_answer)
        await self._send_json(send, trace, reply, orjson.dumps(answer))

    async def _restore_thinking(self, namespace: str, messages: list[dict[str, Any]]) -> None:
        """Put the kept signed thinking back in front of the last tool-calling turn (the
        one its tool results answer), unless the client sent it itself."""
        for message in reversed(messages):
            content = message["content"]
            if message["role"] != "assistant" or not isinstance(content, list):
                continue
            calls = [block for block in content if block.get("type") == "tool_use"]
            if not calls:
                continue
            if content[0].get("type") not in ("thinking", "redacted_thinking"):
                kept = await self._thinking.recall(namespace, str(calls[0]["id"]))
                message["content"] = [*kept, *content]
            return

    # -- responses -----------------------------------------------------------------------

    async def _history(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        """The Claude conversation of `previous_response_id`, its answer included."""
        previous = body.get("previous_response_id")
        if not isinstance(previous, str) or not previous:
            return ()
        record = await self._store.load(namespace, previous)
        message = await self._store.answer(record) if record is not None else None
        if record is None or message is None:
            raise NotFound(f"previous_response_id: no response {previous!r} (unknown or expired)")
        content = message.get("content") or []
        if record.get("json_answer"):  # the JSON tool was the answer: history holds its text
            content = [_json_tool_as_text(block) for block in content]
        return (*record["messages"], {"role": "assistant", "content": content})

    async def _responses(self, scope: Scope, receive: Receive, send: Send, trace: Trace) -> None:
        headers, creds, body = await self._decode(scope, receive, trace, "/v1/responses")
        history = await self._history(creds.namespace, body)
        request = responses_request(
            body, model=self._model(body), default_max_tokens=self._max_tokens, history=history
        )
        call = await self._call(request.body, request.stream, creds, headers, trace)
        reply = await self._pipeline.run(call)
        if reply.status != 200:
            await self._send_failure(send, trace, reply)
            return
        response_id, created = self._store.new_id(), int(time.time())
        shape = ResponseShape(body, str(request.body["model"]), request.store)
        if reply.chunks is None:
            message = self._message(reply)
            answer = response_object(
                message,
                shape,
                response_id=response_id,
                created_at=created,
                json_answer=request.json_answer,
            )
            await self._keep(call, request, response_id, created, shape, message)
            await self._send_json(send, trace, reply, orjson.dumps(answer))
            return
        events = ResponseEvents(
            shape, response_id=response_id, created_at=created, json_answer=request.json_answer
        )

        async def finished() -> None:
            if events.message is not None:
                await self._keep(call, request, response_id, created, shape, events.message)

        await self._send_stream(send, receive, trace, reply, events, finished)

    async def _keep(
        self,
        call: MessagesCall,
        request: ResponsesRequest,
        response_id: str,
        created: int,
        shape: ResponseShape,
        message: dict[str, Any],
    ) -> None:
        if not request.store:
            return
        record: dict[str, Any] = {
            "created_at": created,
            "messages": request.body["messages"],
            "shape": shape.fields,
            "json_answer": request.json_answer,
            "answer_key": self._pipeline.cache_key(call),
        }
        if not call.control.store:  # the answer was not cached: the record keeps it
            record["answer"] = message
        offline = call.creds.upstream_key is None
        await self._store.save(call.creds.namespace, response_id, record, shared=not offline)

    async def _stored(self, scope: Scope, receive: Receive, send: Send, trace: Trace) -> None:
        if scope["method"] != "GET":
            raise NotFound("use GET /v1/responses/{id}")
        creds = self._keys.resolve(request_headers(scope))
        response_id = scope["path"].removeprefix("/v1/responses/")
        record = await self._store.load(creds.namespace, response_id)
        message = await self._store.answer(record) if record is not None else None
        if record is None or message is None:
            raise NotFound(f"no response {response_id!r} (unknown or expired)")
        shape = ResponseShape.from_fields(record["shape"])
        answer = response_object(
            message,
            shape,
            response_id=response_id,
            created_at=int(record["created_at"]),
            json_answer=bool(record.get("json_answer")),
        )
        body = orjson.dumps(answer)
        trace.status, trace.first, trace.response_bytes = 200, time.perf_counter(), len(body)
        await send_response(send, 200, [JSON_CONTENT], body)

    # -- models ----------------------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send, trace: Trace) -> None:
        headers = request_headers(scope)
        creds = self._keys.resolve(headers)
        await self._providers.refresh()
        raw_path = scope.get("raw_path") or quote(scope["path"], safe=_PCHAR).encode("ascii")
        query = scope.get("query_string", b"").decode("latin-1")
        target = canonical_target(raw_path, scope.get("query_string", b""))
        version = headers.get(b"anthropic-version")
        reply = await self._pipeline.passthrough(
            "GET",
            target,
            b"",
            creds,
            version=version.decode("latin-1") if version else None,
            beta=None,
            content_type=None,
        )
        body = reply.body
        if reply.chunks is not None:
            body = b"".join([part async for part in reply.chunks])
            await reply.aclose()
        page = json_object_or_none(body) if reply.status == 200 else None
        if page is not None and scope["path"] != "/v1/models":
            body = orjson.dumps(model_item(page))
        elif page is not None:
            first_page = "after_id=" not in query and "before_id=" not in query
            aliases = self._providers.config.aliases if first_page else {}
            body = orjson.dumps(models_list(page, aliases))
        await self._send_json(send, trace, reply, body)


def _json_tool_as_text(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
        return {"type": "text", "text": orjson.dumps(block.get("input") or {}).decode()}
    return block


async def _encode(
    upstream: AsyncIterator[bytes],
    encoder: _Encoder,
    trace: Trace,
    finished: Callable[[], Awaitable[None]] | None,
    fold: MessageAssembler | None = None,
) -> AsyncIterator[bytes]:
    """The upstream's Claude events re-encoded; a failure midway as the face's error event.

    The upstream is read to its end. With `finished`, the last events wait for that: a
    shared (coalesced) stream and the cache store see the whole answer before the client
    learns it is complete (so a stored response can be read back at once).
    `fold`, when given, assembles the Claude message as it passes.
    """
    parser = ClaudeFrames()
    last: list[bytes] = []
    try:
        async for piece in upstream:
            events = parser.feed(piece)
            if fold is not None:
                for name, data in events:
                    fold.add(name, data)
            out = encoder.feed(events)
            if encoder.done and finished is not None:
                last += out
            elif out:
                joined = b"".join(out)
                trace.response_bytes += len(joined)
                yield joined
    except UpstreamError as error:
        log.warning("upstream stream failed midway: %s", error.message)
        if not encoder.done:
            last += encoder.error(error.type, error.message)
    if not encoder.done:
        last += encoder.error("api_error", _UNCUT.decode())
    elif finished is not None and last:
        await finished()
    if last:
        joined = b"".join(last)
        trace.response_bytes += len(joined)
        yield joined
