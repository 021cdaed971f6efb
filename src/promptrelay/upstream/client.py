"""The one pooled HTTP client to the upstream (aiohttp's ClientSession).

Why aiohttp and not httpx: on this machine a pass-through proxy on httpx.AsyncClient did
546 req/s at 24 ms p50, the same on aiohttp 5,014 req/s at 3.1 ms (c=16); httpcore's pool
scans every connection per request. See docs/dependencies.md.

Pool bounds: `limit=MAX_SOCKETS` caps open connections. aiohttp has no cap on idle
keep-alive connections, so `_PoolConnector` adds one: a connection released while
MAX_FREE_SOCKETS others sit idle and no call waits for one is kept at most `TRIM_AFTER`
seconds, then the idle connections beyond the bound are closed (the least recently used
first); with MAX_FREE_SOCKETS=0 it is closed at once. Idle ones within the bound close
after UPSTREAM_KEEPALIVE seconds unused (docs/pool.md has the reconnect cost that bound
trades against).

aiohttp errors are translated here, at the boundary, into `UpstreamTimeout` and
`UpstreamUnavailable`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from promptrelay.errors import UpstreamTimeout, UpstreamUnavailable
from promptrelay.settings import Settings
from promptrelay.upstream.paths import upstream_url

__all__ = ["TRIM_AFTER", "PoolStats", "UpstreamClient", "UpstreamResponse"]

# Seconds a connection beyond MAX_FREE_SOCKETS may stay idle: under a load whose calls in
# flight swing around the bound, closing at once reopened one connection every few calls.
TRIM_AFTER = 1.0

_URLS_MAX = 256  # checked targets kept (a miss always asks for the same few)

# Response headers worth passing back to the client; everything else is hop-by-hop,
# recomputed by our server (length, encoding) or noise.
_KEPT_PREFIXES = (b"anthropic-", b"x-should-retry")
_KEPT_NAMES = frozenset(
    {
        b"content-type",
        b"request-id",
        b"x-request-id",
        b"retry-after",
        b"retry-after-ms",
        b"content-disposition",
    }
)


_Plan = tuple[tuple[bytes, ...], Callable[[Sequence[tuple[bytes, bytes]]], Any]]
_PLANS: dict[tuple[bytes, ...], _Plan] = {}  # by the answer's header names, in order
_PLANS_MAX = 64
_NAME, _VALUE = itemgetter(0), itemgetter(1)


def kept_response_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers worth passing on, from aiohttp's raw (bytes) headers: no decoding.

    Which of them to keep depends on the names alone, and an upstream answers with the
    same names in the same order again and again: that choice is made once per sequence
    of names, and applied in C (`itemgetter`, `zip`) to each answer's values."""
    names = tuple(map(_NAME, raw))
    plan = _PLANS.get(names)
    if plan is None:
        plan = _plan(names)
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[names] = plan
    kept, pick = plan
    return list(zip(kept, map(_VALUE, pick(raw)), strict=True))


def _plan(names: tuple[bytes, ...]) -> _Plan:
    lowered = [name.lower() for name in names]
    indices = [
        i
        for i, lower in enumerate(lowered)
        if lower in _KEPT_NAMES or lower.startswith(_KEPT_PREFIXES)
    ]
    kept = tuple(lowered[i] for i in indices)
    if len(indices) == 1:
        only = indices[0]
        return kept, lambda raw: (raw[only],)
    return kept, itemgetter(*indices) if indices else lambda raw: ()


@dataclass(slots=True)
class UpstreamResponse:
    """An upstream answer: either fully read (`body`) or still streaming (`chunks`)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    content_type: str = ""
    chunks: AsyncIterator[bytes] | None = None
    _release: Any = field(default=None, repr=False)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    async def aclose(self) -> None:
        """Release the connection of a streaming response (idempotent)."""
        if self._release is not None:
            release, self._release = self._release, None
            release()


@dataclass(slots=True)
class PoolStats:
    limit: int
    open: int
    idle: int
    in_use: int
    waiting: int
    connections_opened: int
    requests: int


class _ResponseHandler(ResponseHandler):
    """aiohttp's connection protocol with its read timeout (sock_read, UPSTREAM_READ_TIMEOUT)
    moved on lazily: aiohttp cancels its timer and starts another at every read, which
    costs a streamed answer two timer operations per event; this one only notes the time
    of the read, and its one timer, when it fires early, waits for the rest."""

    _read_at = 0.0

    def _reschedule_timeout(self) -> None:
        self._read_at = now = self._loop.time()
        timeout = self._read_timeout
        if not timeout:
            self._drop_timeout()
        elif self._read_timeout_handle is None:
            self._read_timeout_handle = self._loop.call_at(now + timeout, self._read_deadline)

    def _read_deadline(self) -> None:
        self._read_timeout_handle = None
        timeout = self._read_timeout
        if not timeout:
            return
        deadline = self._read_at + timeout
        if deadline > self._loop.time():
            self._read_timeout_handle = self._loop.call_at(deadline, self._read_deadline)
        else:
            self._on_read_timeout()


class _PoolConnector(aiohttp.TCPConnector):
    """A TCPConnector that keeps at most `max_idle` idle connections, and counts the
    connections it opens.

    aiohttp's trace hooks could count them too, but any TraceConfig makes every request
    build and await a dozen trace signals (measured: ~4% of the miss path's CPU). The
    overridden methods are private but have kept their signatures since aiohttp 3.0; the
    pool tests fail loudly if that ever changes.
    """

    connections_opened = 0

    def __init__(self, *, max_idle: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        handler = functools.partial(_ResponseHandler, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", handler)
        self._max_idle = max_idle
        self._trim_handle: asyncio.TimerHandle | None = None

    async def _create_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super()._create_connection(*args, **kwargs)
        self.connections_opened += 1
        return connection

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        # Decided before the base class wakes a waiter: a queued call takes this
        # connection, so it is kept whatever the idle count (closing it would only make
        # that call open another).
        if not should_close and not any(self._waiters.values()):
            idle = sum(len(conns) for conns in self._conns.values())
            if idle >= self._max_idle:
                should_close = self._max_idle == 0
                if self._trim_handle is None and not should_close:
                    self._trim_handle = self._loop.call_later(TRIM_AFTER, self._trim)
        super()._release(key, protocol, should_close=should_close)

    def _trim(self) -> None:
        """Close the idle connections beyond the bound, least recently used first."""
        self._trim_handle = None
        idle = sorted(
            (
                (used, key, protocol)
                for key, conns in self._conns.items()
                for protocol, used in conns
            ),
            key=lambda entry: entry[0],
        )
        for _used, key, protocol in idle[: max(0, len(idle) - self._max_idle)]:
            conns = self._conns[key]
            conns.remove(next(entry for entry in conns if entry[0] is protocol))
            if not conns:
                del self._conns[key]
            protocol.close()

    async def close(self, *, abort_ssl: bool = False) -> None:
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        await super().close(abort_ssl=abort_ssl)


class UpstreamClient:
    """Owns the pooled session; created and closed by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.anthropic_base_url
        self._limit = settings.max_sockets
        self._connector = _PoolConnector(
            max_idle=settings.max_free_sockets,
            limit=settings.max_sockets,
            limit_per_host=0,
            keepalive_timeout=settings.upstream_keepalive,
            ttl_dns_cache=300,
        )
        self._timeout = aiohttp.ClientTimeout(
            total=settings.upstream_timeout,
            connect=settings.upstream_connect_timeout,
            sock_read=settings.upstream_read_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            timeout=self._timeout,
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        self.requests = 0
        self._in_flight = 0
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}  # by total in 10 ms steps

    @property
    def base_url(self) -> str:
        return self._base

    async def close(self) -> None:
        await self._session.close()

    def _url(self, target: str) -> URL:
        """The checked upstream URL of `target` (see `upstream_url`), remembered for the
        few targets every request uses, so a miss does not re-check `/v1/messages`."""
        url = self._urls.get(target)
        if url is None:
            url = upstream_url(self._base, target)
            if len(self._urls) >= _URLS_MAX:
                self._urls.clear()
            self._urls[target] = url
        return url

    def _timeout_for(self, total: float | None) -> aiohttp.ClientTimeout:
        """The session's timeouts, with the total cut to what the caller has left.

        Rounded down to 10 ms, so the calls of a burst (each with a hair less than the
        whole budget left) share one object instead of building one each."""
        if total is None or total >= (self._timeout.total or total):
            return self._timeout
        centis = int(total * 100)
        timeout = self._timeouts.get(centis) if centis else None
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=centis / 100 or total,  # never 0: that means "no limit"
                connect=self._timeout.connect,
                sock_read=self._timeout.sock_read,
            )
            if centis:
                if len(self._timeouts) >= _URLS_MAX:
                    self._timeouts.clear()
                self._timeouts[centis] = timeout
        return timeout

    def pool_stats(self) -> PoolStats:
        # aiohttp exposes no public pool gauges; `_acquired` and `_conns` are private but old.
        in_use = len(self._connector._acquired)
        idle = sum(len(v) for v in self._connector._conns.values())
        # Calls beyond the connection limit are the ones queued inside the connector.
        # Every call holds or waits for a connection until it releases it; those beyond
        # the limit are queued inside the connector.
        waiting = max(0, self._in_flight - self._limit)
        return PoolStats(
            limit=self._limit,
            open=in_use + idle,
            idle=idle,
            in_use=in_use,
            waiting=waiting,
            connections_opened=self._connector.connections_opened,
            requests=self.requests,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        stream: bool = False,
        timeout: float | None = None,
        on_head: Callable[[int], Awaitable[object]] | None = None,
    ) -> UpstreamResponse:
        """Send one request. With `stream`, a 2xx body is handed over as it arrives;
        everything else (errors included) is read whole. `on_head(status)` is awaited as
        soon as the status line and headers have arrived, before any of the body.

        `path` is a canonical `/v1/...` target (paths.canonical_target); anything else
        raises UnsafePath before a byte is sent. Raises UpstreamTimeout /
        UpstreamUnavailable; any HTTP status is a response.
        """
        url = self._url(path)
        self.requests += 1
        self._in_flight += 1
        try:
            response = await self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=self._timeout_for(timeout),
            )
        except (TimeoutError, aiohttp.ClientError) as error:
            self._in_flight -= 1
            raise _no_answer(error) from error
        except BaseException:
            self._in_flight -= 1
            raise
        return await self._answer(response, stream=stream, on_head=on_head)

    async def _answer(
        self,
        response: aiohttp.ClientResponse,
        *,
        stream: bool,
        on_head: Callable[[int], Awaitable[object]] | None,
    ) -> UpstreamResponse:
        """The answer of a sent request; its connection is released exactly once (at
        once for a whole body, when the stream ends or is closed otherwise)."""
        release = _Release(self, response)
        if on_head is not None:
            try:
                await on_head(response.status)
            except BaseException:
                release()
                raise
        kept = kept_response_headers(response.raw_headers)
        content_type = response.headers.get("content-type", "")
        if stream and 200 <= response.status < 300:
            return UpstreamResponse(
                status=response.status,
                headers=kept,
                content_type=content_type,
                chunks=_iterate(response, release),
                _release=release,
            )
        try:  # read here, not in a helper coroutine the suspensions would resume through
            body = await response.read()
        except TimeoutError as error:
            raise UpstreamTimeout("the upstream did not finish its answer in time") from error
        except aiohttp.ClientError as error:
            raise UpstreamUnavailable(
                f"the upstream answer broke off: {_describe(error)}"
            ) from error
        finally:
            release()
        return UpstreamResponse(
            status=response.status, headers=kept, body=body, content_type=content_type
        )


class _Release:
    """Gives an answer's connection back, once however many paths call it: a slotted
    object, where a closure held a cell per name for as long as the call was in flight."""

    __slots__ = ("_client", "_response")

    def __init__(self, client: UpstreamClient, response: aiohttp.ClientResponse) -> None:
        self._client: UpstreamClient | None = client
        self._response = response

    def __call__(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client._in_flight -= 1
            self._response.release()


def _no_answer(error: TimeoutError | aiohttp.ClientError) -> UpstreamTimeout | UpstreamUnavailable:
    if isinstance(error, TimeoutError):
        return UpstreamTimeout("the upstream did not answer in time")
    return UpstreamUnavailable(f"cannot reach the upstream: {_describe(error)}")


async def _iterate(
    response: aiohttp.ClientResponse, release: Callable[[], None]
) -> AsyncIterator[bytes]:
    content = response.content
    try:
        # readany itself, not iter_any: its iterator is one more coroutine per read
        while chunk := await content.readany():
            yield chunk
    except TimeoutError as error:
        raise UpstreamTimeout("the upstream stream stalled") from error
    except aiohttp.ClientError as error:
        raise UpstreamUnavailable(f"the upstream stream broke off: {_describe(error)}") from error
    finally:
        release()


def _describe(error: BaseException) -> str:
    # aiohttp messages can carry the URL; never the headers (our API key lives there).
    return type(error).__name__ + (f" ({error})" if str(error) else "")
