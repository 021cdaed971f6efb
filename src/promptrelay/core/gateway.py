"""The pipeline's run step (core/pipeline.py owns it): one object, built once.

    Pipeline.run(call) -> Gateway.messages(call)
        -> cache key -> tiered cache        HIT: stored answer (replayed as SSE if asked)
        -> coalescer                        identical request in flight? share its answer
        -> ResilientUpstream                retries + breaker per attempt | offline provider
        -> store                            only complete, successful, non-empty answers

Rules of the cache (docs/cache.md):
- `Cache-Control: no-cache` skips the lookup and stores; `no-store` does neither;
  `max-age=N` accepts a stored answer at most N seconds old. Both opt-outs also keep the
  request out of the coalescer: its caller asked for a fresh answer.
- Errors, empty answers and streams that ended in an `error` event, broke off or were
  abandoned are never stored. A stream is stored once `message_stop` arrived.
- Offline answers are stored in this process's memory tier only, under their own key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import orjson

from promptrelay.cache.base import CacheEntry
from promptrelay.cache.keys import CLAUDE_RESPONSE, KeyParts, RawMemo, cache_key
from promptrelay.cache.tiered import TieredCache
from promptrelay.core.auth import Credentials, KeyMode
from promptrelay.core.cache_control import DEFAULT, CacheControl
from promptrelay.core.coalesce import Coalescer, StreamCoalescer
from promptrelay.core.events import (
    CacheLookup,
    Coalesced,
    EventBus,
    PromptCacheUsed,
    UpstreamFinished,
)
from promptrelay.core.keyfile import KeyEntry
from promptrelay.core.metered import MeteredStream
from promptrelay.core.prompt_cache import prompt_cache_used
from promptrelay.core.quotas import Quotas
from promptrelay.core.request import json_object_or_none
from promptrelay.core.resilient import ResilientUpstream
from promptrelay.core.sse import assemble_message, message_events
from promptrelay.core.stored import UpstreamHeaders, cacheable, stored_entry, upstream_headers
from promptrelay.resilience.estimate import estimate_cost
from promptrelay.resilience.governor import INTERACTIVE
from promptrelay.upstream.client import UpstreamResponse
from promptrelay.upstream.offline import OFFLINE_HEADER, OfflineProvider

__all__ = ["Gateway", "MessagesCall", "Reply"]

_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_RETRY = (b"x-should-retry", b"false")
_COALESCED = (b"x-coalesced", b"true")
_CACHE_TOKENS = b'"cache_'  # usage's cache_read_... and cache_creation_...: else no parse
_PARTS_MAX = 256
_MISSED = CacheLookup(hit=False, content_type=CLAUDE_RESPONSE)  # immutable: one for all
_X_CACHE = {label: (b"x-cache", label.encode()) for label in ("HIT", "MISS", "BYPASS")}


@dataclass(slots=True)
class MessagesCall:
    """One Messages API call as the pipeline sees it."""

    body: dict[str, Any]
    raw: bytes  # the body as the client sent it; forwarded unchanged
    stream: bool
    creds: Credentials
    version: str
    beta: str | None = None
    control: CacheControl = DEFAULT
    timeout: float | None = None  # seconds for the upstream call; None: UPSTREAM_TIMEOUT
    priority: int = INTERACTIVE  # in the governor's lane: interactive ahead of batch items


@dataclass(slots=True)
class Reply:
    """What the HTTP layer writes: a whole body, or chunks to forward as they come."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    cache: str = "MISS"
    close: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    upstream_seconds: float = 0.0  # waited for the upstream or a shared call (telemetry)
    key: str = ""  # the cache key of a `messages` call (a face's record can reference it)
    usage: dict[str, Any] | None = None  # a whole answer's usage, when already parsed

    async def aclose(self) -> None:
        if self.close is not None:
            close, self.close = self.close, None
            await close()


@dataclass(frozen=True, slots=True)
class _Answer:
    """A finished non-streamed upstream answer, shareable between coalesced callers."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    usage: dict[str, Any] | None = None  # parsed once for the store, reused for accounting


@dataclass(frozen=True, slots=True)
class _Head:
    """First item of a (shared) stream: the status line and headers."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes  # whole body when the answer is not a stream (an error)


class Gateway:
    def __init__(
        self,
        upstream: ResilientUpstream,
        offline: OfflineProvider,
        cache: TieredCache,
        events: EventBus,
        quotas: Quotas | None = None,
    ) -> None:
        self._quotas = quotas
        self._upstream = upstream
        self._offline = offline
        self._cache = cache
        self._events = events
        self._base = upstream.upstream.base_url
        self._answers: Coalescer[str, _Answer] = Coalescer()
        self._streams: StreamCoalescer[str, _Head | bytes] = StreamCoalescer()
        self.served_by_mode: dict[str, int] = {mode.value: 0 for mode in KeyMode}
        self._keys: RawMemo[str] = RawMemo()
        # KeyParts by namespace, offline, version, beta and model: few recur
        self._parts: dict[tuple[str, bool, str, str | None, str], KeyParts] = {}
        self._headers = UpstreamHeaders()
        # per stored entry (key, stored_at): its CacheLookup event and its constant headers
        self._hits: RawMemo[tuple[CacheLookup, list[tuple[bytes, bytes]]]] = RawMemo()

    @property
    def base_url(self) -> str:
        return self._base

    def in_flight(self) -> int:
        return self._answers.in_flight() + self._streams.in_flight()

    def key_for(self, call: MessagesCall) -> str:
        # `call.raw` is the encoding of `call.body` (the client's bytes or ours), so the
        # raw bytes and what surrounds the body select the key as well as the body does.
        offline = call.creds.upstream_key is None
        memo = (call.raw, call.creds.namespace, offline, call.version, call.beta)
        key = self._keys.get(memo)
        if key is None:
            key = self._key(call, offline)
            self._keys.put(memo, key)
        return key

    def _key(self, call: MessagesCall, offline: bool) -> str:
        model = str(call.body.get("model", ""))
        memo = (call.creds.namespace, offline, call.version, call.beta, model)
        parts = self._parts.get(memo)
        if parts is None:
            upstream = "offline" if offline else self._base
            parts = KeyParts(call.creds.namespace, upstream, call.version, call.beta, model)
            if len(self._parts) >= _PARTS_MAX:
                self._parts.clear()
            self._parts[memo] = parts
        return cache_key(call.body, parts, CLAUDE_RESPONSE)

    async def lookup(self, call: MessagesCall) -> CacheEntry | None:
        """The lookup `messages` makes, with its CacheLookup event, for a caller that
        answers a hit itself (a Message Batch item)."""
        if not call.control.lookup:
            return None
        entry = await self._cache.get(self.key_for(call), max_age=call.control.max_age)
        if entry is None:
            self._events.emit(_MISSED)
        else:
            self._count_hit(entry)
        return entry

    async def messages(self, call: MessagesCall) -> Reply:
        """`_messages`, and the usage of an upstream answer (never a hit or a shared
        call) charged to the KEYS_FILE key and counted for Anthropic's prompt cache."""
        tenant = call.creds.tenant
        quotas = self._quotas if tenant is not None else None
        watched = PromptCacheUsed in self._events.wanted
        if quotas is None and not watched:
            return await self._messages(call)
        model = str(call.body.get("model", ""))
        if quotas is not None and tenant is not None:
            await quotas.admit(tenant, model)  # a hit counts as a request too
        reply = await self._messages(call)
        if reply.status != 200 or reply.cache == "HIT" or _COALESCED in reply.headers:
            return reply
        account = partial(self._account, model, quotas, tenant, watched)
        if reply.chunks is not None:
            reply.chunks = MeteredStream(reply.chunks, account, output=quotas is not None)
        elif quotas is not None or _CACHE_TOKENS in reply.body:
            usage = reply.usage  # parsed once already when the answer was stored
            if usage is None:
                message = json_object_or_none(reply.body)
                usage = message.get("usage") if message is not None else None
            if isinstance(usage, dict):
                await account(usage)
        return reply

    async def _account(
        self,
        model: str,
        quotas: Quotas | None,
        tenant: KeyEntry | None,
        watched: bool,
        usage: dict[str, Any],
    ) -> None:
        used = prompt_cache_used(model, usage) if watched else None
        if used is not None and (used.read or used.created):
            self._events.emit(used)
        if quotas is not None and tenant is not None:
            await quotas.charge(tenant, model, usage)

    async def _messages(self, call: MessagesCall) -> Reply:
        self.served_by_mode[call.creds.mode._value_] += 1  # _value_: no property call
        key = self.key_for(call)
        control = call.control
        if control.lookup:
            entry = await self._cache.get(key, max_age=control.max_age)
            if entry is not None:
                hit = self._hit(key, entry, call.stream)
                hit.key = key
                return hit
            self._events.emit(_MISSED)
        label = "BYPASS" if control.bypass else "MISS"
        joinable = control.lookup and control.store
        waited = time.perf_counter()
        if call.stream:
            reply = await self._stream(call, key, label, joinable)
            reply.upstream_seconds = time.perf_counter() - waited
            reply.key = key
            return reply
        if joinable:
            answer, follower = await self._answers.run(key, partial(self._fetch, call, key))
        else:
            answer, follower = await self._fetch(call, key if control.store else None), False
        headers = [*answer.headers, _X_CACHE[label]]
        if follower:
            headers.append(_COALESCED)
            self._events.emit(Coalesced(stream=False))
        reply = Reply(answer.status, headers, answer.body, cache=label, key=key, usage=answer.usage)
        reply.upstream_seconds = time.perf_counter() - waited
        return reply

    async def remember(self, key: str, message: dict[str, Any]) -> bool:
        """Store a live answer fetched outside `messages` (a Message Batch result) under
        `key`, the `key_for` of its call, so the same request later is a hit. False if
        not stored."""
        if not cacheable(message):
            return False
        await self._store(key, message, None, False, time.perf_counter())
        return True

    async def forward(
        self,
        method: str,
        target: str,
        body: bytes,
        creds: Credentials,
        *,
        version: str,
        beta: str | None,
        content_type: str | None,
        stream: bool = True,
    ) -> Reply:
        """Any other /v1 route, passed through with the same key rules: one attempt
        through the breaker (ResilientUpstream.passthrough). With `stream`, a 2xx body
        is forwarded as it arrives; otherwise it is read whole."""
        self.served_by_mode[creds.mode._value_] += 1
        if creds.upstream_key is None:
            offline = self._offline.other(method, target.partition("?")[0], body)
            return Reply(offline.status, offline.headers, offline.body)
        headers = upstream_headers(creds.upstream_key, version, beta)
        if content_type:
            headers["content-type"] = content_type
        else:
            del headers["content-type"]
        waited = time.perf_counter()
        response = await self._upstream.passthrough(
            method, target, headers=headers, body=body or None, stream=stream
        )
        return Reply(
            response.status,
            response.headers,
            response.body,
            chunks=response.chunks,
            close=response.aclose,
            upstream_seconds=time.perf_counter() - waited,
        )

    # -- hits ------------------------------------------------------------------------------

    def _hit(self, key: str, entry: CacheEntry, stream: bool) -> Reply:
        memo = (key, entry.stored_at)
        known = self._hits.get(memo)
        if known is None:
            known = self._hit_event(entry), self._hit_headers(entry)
            self._hits.put(memo, known)
        event, extra = known
        self._events.emit(event)
        age = (b"age", b"%d" % max(0, int(time.time() - entry.stored_at)))
        if not stream:
            return Reply(200, [_JSON, *extra, age], entry.value, cache="HIT")
        # the whole replay in one chunk: one write, where an event per write cost a send each
        replay = b"".join(message_events(orjson.loads(entry.value)))
        return Reply(200, [_SSE, *extra, age], chunks=_once(replay), cache="HIT")

    @staticmethod
    def _hit_headers(entry: CacheEntry) -> list[tuple[bytes, bytes]]:
        meta = entry.meta or {}
        return [_X_CACHE["HIT"], OFFLINE_HEADER] if meta.get("offline") else [_X_CACHE["HIT"]]

    def _count_hit(self, entry: CacheEntry) -> None:
        self._events.emit(self._hit_event(entry))

    @staticmethod
    def _hit_event(entry: CacheEntry) -> CacheLookup:
        meta = entry.meta or {}
        return CacheLookup(
            hit=True,
            content_type=CLAUDE_RESPONSE,
            saved_ms=float(meta.get("upstream_ms", 0.0)),
            saved_tokens=int(meta.get("tokens", 0)),
            model=str(meta.get("model", "")),
            # what a hit saved is the stored answer's input priced as Anthropic did
            saved_input_tokens=int(meta.get("input_units", meta.get("input_tokens", 0))),
            saved_output_tokens=int(meta.get("output_tokens", 0)),
        )

    # -- misses, not streamed --------------------------------------------------------------

    async def _fetch(self, call: MessagesCall, store_key: str | None) -> _Answer:
        started = time.perf_counter()
        response, gave_up = await self._send(call)
        headers = [*response.headers, _NO_RETRY] if gave_up else response.headers
        if store_key is None or response.status != 200:
            return _Answer(response.status, headers, response.body)
        message = json_object_or_none(response.body)
        if message is None:
            return _Answer(response.status, headers, response.body)
        await self._store(store_key, message, response.body, _is_offline(call), started)
        usage = message.get("usage")
        return _Answer(200, headers, response.body, usage if type(usage) is dict else None)

    async def _send(self, call: MessagesCall) -> tuple[UpstreamResponse, bool]:
        if call.creds.upstream_key is None:
            return self._offline.messages(call.body, call.raw, stream=call.stream), False
        started = time.perf_counter()
        headers = self._headers.get(call.creds.upstream_key, call.version, call.beta)
        governed = self._upstream.governor is not None
        sent = await self._upstream.send(
            "POST",
            "/v1/messages",
            headers=headers,
            body=call.raw,
            stream=call.stream,
            budget=call.timeout,
            cost=estimate_cost(call.body) if governed else None,
            priority=call.priority,
        )
        self._events.emit(
            UpstreamFinished(sent.response.status, time.perf_counter() - started, sent.attempts)
        )
        return sent.response, sent.gave_up

    async def _store(
        self,
        key: str,
        message: dict[str, Any],
        encoded: bytes | None,
        offline: bool,
        started: float,
    ) -> None:
        if cacheable(message):
            entry = stored_entry(message, encoded, offline, started)
            await self._cache.set(key, entry, shared=not offline)

    # -- misses, streamed ------------------------------------------------------------------

    async def _stream(self, call: MessagesCall, key: str, label: str, joinable: bool) -> Reply:
        store_key = key if call.control.store else None
        if joinable:
            subscription, follower = self._streams.join(
                key, lambda: self._stream_source(call, store_key)
            )
            items: AsyncIterator[_Head | bytes] = aiter(subscription)
            close = subscription.aclose
        else:
            source = self._stream_source(call, store_key)
            items, follower, close = source, False, source.aclose
        try:
            head = await anext(items)
        except BaseException:
            await close()
            raise
        assert isinstance(head, _Head)
        headers = [*head.headers, _X_CACHE[label]]
        if follower:
            headers.append(_COALESCED)
            self._events.emit(Coalesced(stream=True))
        if not head.body and head.status < 300:
            chunks = cast(AsyncIterator[bytes], items)  # only bytes follow the head
            return Reply(head.status, headers, chunks=chunks, cache=label, close=close)
        await close()
        return Reply(head.status, headers, head.body, cache=label)

    async def _stream_source(
        self, call: MessagesCall, store_key: str | None
    ) -> AsyncGenerator[_Head | bytes, None]:
        """The upstream stream as [head, chunk, chunk, ...]; stores it once complete."""
        started = time.perf_counter()
        response, gave_up = await self._send(call)
        headers = [*response.headers, _NO_RETRY] if gave_up else response.headers
        if response.chunks is None:
            yield _Head(response.status, headers, response.body)
            return
        yield _Head(response.status, headers, b"")
        # Forwarded as they arrive; what is stored is folded from the raw bytes once, at
        # the end (a parse per event on the way would cost every event of every stream).
        kept: list[bytes] | None = [] if store_key is not None else None
        try:
            async for chunk in response.chunks:
                if kept is not None:
                    kept.append(chunk)
                yield chunk
        finally:
            await response.aclose()
        if store_key is not None and kept is not None:
            message = assemble_message(b"".join(kept))
            if message is not None:
                await self._store(store_key, message, None, _is_offline(call), started)


def _is_offline(call: MessagesCall) -> bool:
    return call.creds.upstream_key is None


async def _once(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk
