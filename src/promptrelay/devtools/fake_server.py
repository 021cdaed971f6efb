"""`FakeUpstream`: the fake Anthropic server on aiohttp's low-level `web.Server`.

No router or middleware: one handler dispatches on the path, so a request costs little
more than parsing it (benchmarks push thousands of requests per second through here).
Every accepted TCP connection passes through `_protocol_factory`, which counts it.

Counters cover the `/v1/*` routes only; the `/_fake/*` control routes do not move them,
so reading stats never changes them. The request log is the exception: it holds the
method and raw (undecoded) target of every request received, control routes and unknown
paths included, the last `REQUEST_LOG_MAX`, so a test can prove what reached the server.

With a `prefix` (say "/anthropic") the fake answers as if mounted there, as an API behind
a path-prefixed egress proxy would: `/anthropic/v1/...` and `/anthropic/_fake/...` are its
routes, and anything else on the host is a 404 counted in `outside_prefix`.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from promptrelay.devtools import fake_script as script
from promptrelay.devtools import fake_wire as wire
from promptrelay.devtools.fake_batches import FakeBatches
from promptrelay.devtools.fake_cache import FakePromptCache
from promptrelay.devtools.fake_config import FakeConfig, validate_knobs
from promptrelay.devtools.fake_limits import BucketSpec, FakeLimits

__all__ = ["FakeUpstream"]

_JSON = "application/json"
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"  # `garbage_next`
# Requests per minute announced in anthropic-ratelimit-* headers while no bucket is set
# (the `limit_*` knobs): far above what loopback benchmarks send, so the governor, which
# paces by these headers, stays out of their way, as against a generous real tier.
_RATE_LIMIT = 1_000_000
_RATE_WINDOW_S = 60.0
REQUEST_LOG_MAX = 10_000


@dataclass(slots=True)
class _Counters:
    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    by_status: dict[int, int] = field(default_factory=dict)
    connections_total: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    api_keys_seen: dict[str, None] = field(default_factory=dict)  # ordered set
    last_headers: Any = None  # the last /v1 request's CIMultiDictProxy, lower-cased lazily
    log: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_MAX))
    outside_prefix: int = 0

    def reset(self) -> None:
        """Zero everything but the live `in_flight` gauge."""
        self.requests = self.connections_total = self.outside_prefix = 0
        self.log.clear()
        self.by_path, self.by_status, self.api_keys_seen = {}, {}, {}
        self.max_in_flight = self.in_flight
        self.last_headers = None


def _api_key(request: web.BaseRequest) -> str | None:
    """`x-api-key`, or a Bearer token (anthropic SDK 2.x sends its key that way)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _drop(request: web.BaseRequest) -> web.Response:
    """Close the connection (after flushing what was written); nothing more is sent."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)  # never reaches the client; counted in by_status


class FakeUpstream:
    """A fake Anthropic API on loopback; see `promptrelay.devtools.fake` for usage."""

    def __init__(
        self,
        config: FakeConfig | None = None,
        *,
        rng: random.Random | None = None,
        prefix: str = "",
        request_log_max: int = REQUEST_LOG_MAX,
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"prefix must start with '/' and not end with one: {prefix!r}")
        self.config = config if config is not None else FakeConfig()
        self._prefix = prefix
        self._rng = rng if rng is not None else random.Random(0)
        self._counters = _Counters(log=deque(maxlen=request_log_max))
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._port = 0
        self._next_request_id = 0
        self._window_start = 0.0
        self._window_count = 0
        self._hangs: set[asyncio.Future[None]] = set()  # requests held by `hang`
        self._batches = FakeBatches()
        self._limits = FakeLimits()
        self._prompt_cache = FakePromptCache()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 picks a free port); return the bound port."""
        if self._listener is not None:
            raise RuntimeError("FakeUpstream already started")
        loop = asyncio.get_running_loop()
        # handler_cancellation: a client that goes away cancels its handler (ends `hang`).
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._listener = await loop.create_server(self._protocol_factory, host, port)
        self._port = self._listener.sockets[0].getsockname()[1]
        self._window_start = loop.time()
        return self._port

    async def stop(self, timeout: float = 0.5) -> None:
        """Stop listening, give requests in progress `timeout` s, then drop them."""
        listener, server = self._listener, self._server
        self._listener = self._server = None
        if listener is None or server is None:
            return
        listener.close()
        for waiter in list(self._hangs):
            if not waiter.done():
                waiter.set_result(None)
        await server.shutdown(timeout)
        await listener.wait_closed()
        await asyncio.sleep(0)  # let closed transports run connection_lost

    def _protocol_factory(self) -> RequestHandler:
        assert self._server is not None
        self._counters.connections_total += 1
        return self._server()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Where the API is: the origin, plus the prefix if there is one."""
        return f"http://127.0.0.1:{self._port}{self._prefix}"

    # -- control ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset (JSON-ready; also `GET /_fake/stats`).

        requests, by_path {path: n}, by_status {"200": n; "499": no answer sent},
        connections_total (accepted), connections_open, in_flight, max_in_flight,
        api_keys_seen (distinct, in order), last_headers (last /v1 request, lower-cased),
        last_cache_control [[where, cache_control]] (the last Messages request's
        prompt-cache breakpoints),
        request_log [{"method", "path"}: every request, oldest first, the path raw with
        its query], outside_prefix (requests not under `prefix`).
        """
        c = self._counters
        headers = c.last_headers
        return {
            "requests": c.requests,
            "by_path": dict(c.by_path),
            "by_status": {str(k): v for k, v in c.by_status.items()},
            "connections_total": c.connections_total,
            "connections_open": len(self._server.connections) if self._server else 0,
            "in_flight": c.in_flight,
            "max_in_flight": c.max_in_flight,
            "api_keys_seen": list(c.api_keys_seen),
            "last_headers": {k.lower(): v for k, v in headers.items()} if headers else {},
            "request_log": [{"method": method, "path": path} for method, path in c.log],
            "outside_prefix": c.outside_prefix,
            "last_cache_control": [list(b) for b in self._prompt_cache.last_breakpoints],
        }

    def reset(self) -> None:
        """Zero the counters (`in_flight` stays: it is live) and refill the rate-limit
        buckets. Knobs are left alone."""
        self._counters.reset()
        self._limits.reset()
        self._prompt_cache.reset()

    def configure(self, **knobs: Any) -> None:
        """Change knobs in place (ValueError on unknown names or bad values)."""
        for name, value in validate_knobs(knobs).items():
            setattr(self.config, name, value)

    # -- request handling ------------------------------------------------------------

    def _headers(self, count: bool) -> dict[str, str]:
        self._next_request_id += 1
        if count:
            now = asyncio.get_running_loop().time()
            if now - self._window_start >= _RATE_WINDOW_S:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
        return {
            "request-id": f"req_fake{self._next_request_id:016d}",
            "anthropic-ratelimit-requests-limit": str(_RATE_LIMIT),
            "anthropic-ratelimit-requests-remaining": str(max(0, _RATE_LIMIT - self._window_count)),
            "anthropic-ratelimit-requests-reset": _rfc3339_in(
                self._window_start + _RATE_WINDOW_S - asyncio.get_running_loop().time()
            ),
        }

    def _json(self, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
        headers["Content-Type"] = _JSON
        return web.Response(status=status, body=body, headers=headers)

    def _error(
        self, status: int, headers: dict[str, str], message: str | None = None
    ) -> web.Response:
        return self._json(status, wire.error_body(status, message, headers["request-id"]), headers)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        c = self._counters
        c.log.append((request.method, request.raw_path))
        path = request.path
        if self._prefix:
            if not path.startswith(self._prefix + "/"):
                c.outside_prefix += 1
                message = f"Not found: {path} is outside the prefix {self._prefix}"
                return self._error(404, self._headers(count=False), message)
            path = path[len(self._prefix) :]
        if not path.startswith("/v1/"):
            return await self._control(request, path, self._headers(count=False))
        c.requests += 1
        c.by_path[path] = c.by_path.get(path, 0) + 1
        c.last_headers = request.headers
        c.in_flight += 1
        if c.in_flight > c.max_in_flight:
            c.max_in_flight = c.in_flight
        status = 499  # stays if the client goes away first (nginx's convention)
        try:
            response = await self._route(request, path, self._headers(count=True))
            status = response.status
            return response
        finally:
            c.in_flight -= 1
            c.by_status[status] = c.by_status.get(status, 0) + 1

    async def _route(
        self, request: web.BaseRequest, path: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        key = _api_key(request)
        if key:
            self._counters.api_keys_seen[key] = None
        else:
            return self._error(401, headers, "x-api-key header is required")
        method = request.method
        if path == "/v1/messages" and method == "POST":
            return await self._messages(request, headers, key)
        if path == "/v1/messages/count_tokens" and method == "POST":
            try:
                tokens = wire.count_tokens(await request.read())
            except wire.InvalidRequest as exc:
                return self._error(400, headers, str(exc))
            return self._json(200, orjson.dumps({"input_tokens": tokens}), headers)
        if path.startswith("/v1/messages/batches"):
            return await self._message_batches(request, path, method, headers)
        if path == "/v1/models" and method == "GET":
            return self._models(request, headers)
        if path.startswith("/v1/models/") and method == "GET":
            body = wire.model_json(path.removeprefix("/v1/models/"))
            if body is not None:
                return self._json(200, body, headers)
            return self._error(404, headers, f"model: {path.removeprefix('/v1/models/')}")
        return self._error(404, headers, f"Not found: {method} {path}")

    async def _message_batches(
        self, request: web.BaseRequest, path: str, method: str, headers: dict[str, str]
    ) -> web.Response:
        now = asyncio.get_running_loop().time()
        rest = path.removeprefix("/v1/messages/batches").strip("/")
        if not rest and method == "POST":
            failure = self._failure_status(self.config)
            if failure is not None:
                return self._error(failure, headers)
            try:
                delay = self.config.batch_processing_ms / 1000
                batch_id = self._batches.create(await request.read(), now=now, delay_s=delay)
            except wire.InvalidRequest as exc:
                return self._error(400, headers, str(exc))
            view = self._batches.view(batch_id, now=now, base_url=self.url)
            return self._json(200, orjson.dumps(view), headers)
        batch_id, _, tail = rest.partition("/")
        if method == "GET" and batch_id and not tail:
            view = self._batches.view(batch_id, now=now, base_url=self.url)
            if view is not None:
                return self._json(200, orjson.dumps(view), headers)
        elif method == "GET" and batch_id and tail == "results":
            lines = self._batches.results(batch_id, now=now)
            if lines is not None:
                headers["Content-Type"] = "application/binary"
                return web.Response(status=200, body=lines, headers=headers)
        return self._error(404, headers, f"Not found: {method} {path}")

    def _models(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self._error(400, headers, "limit: must be an integer between 1 and 1000")
        page = wire.models_page(limit, query.get("after_id"), query.get("before_id"))
        return self._json(200, page, headers)

    def _failure_status(self, config: FakeConfig) -> int | None:
        if config.fail_next > 0:
            config.fail_next -= 1
            return config.fail_next_status
        if config.fail_status is not None and config.fail_rate > 0:
            if self._rng.random() < config.fail_rate:
                return config.fail_status
        return None

    async def _messages(
        self, request: web.BaseRequest, headers: dict[str, str], key: str
    ) -> web.StreamResponse:
        config = self.config
        if config.hang:
            await self._hang()
            return _drop(request)
        try:
            answer = wire.answer_for(await request.read())
        except wire.InvalidRequest as exc:
            return self._error(400, headers, str(exc))
        if config.garbage_next > 0:
            config.garbage_next -= 1
            headers["Content-Type"] = "text/html"
            return web.Response(status=200, body=_GARBAGE, headers=headers)
        raw = await request.read()
        self._prompt_cache.last_breakpoints = []
        if b'"cache_control"' in raw:
            answer = self._cached(key, raw, answer)
        refused = self._rate_limit(key, answer, headers)
        if refused is not None:
            return refused
        failure = self._failure_status(config)
        if failure is not None:
            if config.fail_latency_ms > 0:
                await asyncio.sleep(config.fail_latency_ms / 1000)
            if config.retry_after is not None:
                headers["retry-after"] = f"{config.retry_after:g}"
            return self._error(failure, headers)
        delay_ms = config.latency_ms
        if config.jitter_ms:
            delay_ms = max(0.0, delay_ms + self._rng.uniform(-config.jitter_ms, config.jitter_ms))
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        message = script.scripted_message(
            answer.body, answer.id, answer.text, answer.input_tokens, config
        )
        if not answer.stream:
            body = wire.message_json(answer) if message is None else orjson.dumps(message)
            return self._json(200, body, headers)
        return await self._stream(request, answer, message, config, headers)

    def _cached(self, key: str, raw: bytes, answer: wire.Answer) -> wire.Answer:
        """The answer with its input split by the prompt cache (fake_cache.py)."""
        usage = self._prompt_cache.lookup(
            key, orjson.loads(raw), self.config.prompt_cache_min_tokens
        )
        if not usage.cached:
            return answer
        return replace(
            answer,
            input_tokens=max(0, answer.input_tokens - usage.cached),
            cache_creation=usage.created,
            cache_creation_1h=usage.created_1h,
            cache_read=usage.read,
        )

    def _bucket_specs(self) -> dict[str, BucketSpec]:
        config = self.config
        return {
            "requests": BucketSpec(config.limit_requests, config.limit_requests_per_s),
            "input-tokens": BucketSpec(config.limit_input_tokens, config.limit_input_tokens_per_s),
            "output-tokens": BucketSpec(
                config.limit_output_tokens, config.limit_output_tokens_per_s
            ),
        }

    def _rate_limit(
        self, key: str, answer: wire.Answer, headers: dict[str, str]
    ) -> web.Response | None:
        """Take the request from the key's buckets (headers updated), or its 429."""
        config = self.config
        if (
            config.limit_requests is None
            and config.limit_input_tokens is None
            and config.limit_output_tokens is None
        ):
            return None
        specs = self._bucket_specs()
        counted = answer.input_tokens + answer.cache_creation  # cache reads do not count
        verdict = self._limits.admit(key, specs, counted, answer.max_tokens)
        headers.update(verdict.headers)
        if verdict.allowed:
            self._limits.settle(key, specs, answer.max_tokens, answer.output_tokens)
            return None
        headers["retry-after"] = str(max(1, math.ceil(verdict.retry_after)))
        message = f"This request would exceed your rate limit of {verdict.limit} (fake upstream)"
        return self._error(429, headers, message)

    async def _hang(self) -> None:
        """Wait until the client goes away (the handler is cancelled) or `stop()`."""
        waiter = asyncio.get_running_loop().create_future()
        self._hangs.add(waiter)
        try:
            await waiter
        finally:
            self._hangs.discard(waiter)

    async def _stream(
        self,
        request: web.BaseRequest,
        answer: wire.Answer,
        message: dict[str, Any] | None,
        config: FakeConfig,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        if message is None:
            head, deltas, tail = wire.stream_parts(
                answer, config.stream_chunks, config.extra_events
            )
        else:
            head, deltas, tail = script.stream_events(message, config.stream_chunks)
        cut = len(deltas)
        if config.stream_error_after is not None:
            cut = min(cut, config.stream_error_after)
            tail = wire.STREAM_ERROR_EVENT
        drop = config.close_mid_stream_after
        if drop is not None and drop < cut:
            cut = drop
        else:
            drop = None
        headers["Content-Type"] = "text/event-stream; charset=utf-8"
        headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        interval = config.chunk_interval_ms / 1000
        if interval <= 0:
            await response.write(b"".join([head, *deltas[:cut]]))
        else:
            await response.write(head)
            for i, delta in enumerate(deltas[:cut]):
                if i:
                    await asyncio.sleep(interval)
                await response.write(delta)
        if drop is not None:
            _drop(request)
            return response
        await response.write(tail)
        await response.write_eof()
        return response

    async def _control(
        self, request: web.BaseRequest, path: str, headers: dict[str, str]
    ) -> web.Response:
        method = request.method
        if path == "/_fake/stats" and method == "GET":
            return self._json(200, orjson.dumps(self.stats()), headers)
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return self._json(200, b'{"reset":true}', headers)
        if path == "/_fake/config" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    knobs = orjson.loads(await request.read())
                    if not isinstance(knobs, dict):
                        raise ValueError("body must be a JSON object of FakeConfig fields")
                    self.configure(**knobs)
                except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
                    return self._error(400, headers, str(exc))
            return self._json(200, orjson.dumps(asdict(self.config)), headers)
        return self._error(404, headers, f"Not found: {method} {path}")


def _rfc3339_in(seconds: float) -> str:
    """The wall-clock moment `seconds` from now, as Anthropic writes its reset times."""
    moment = datetime.now(UTC) + timedelta(seconds=max(0.0, seconds))
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
