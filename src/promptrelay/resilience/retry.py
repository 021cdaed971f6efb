"""Retry policy as data, and the one loop that applies it through the circuit breaker.

Rules
-----

    retryable      connection errors, timeouts, 429, 500, 502, 503, 504, 529; nothing else
    wait           the server's retry-after when it sent one (retry-after-ms first), else
                   full jitter: uniform(0, min(cap, base * 2**attempt))
    give up        attempts exhausted, retry-after longer than max_wait, or the wait would
                   end past the deadline (seconds since the first attempt began)
    breaker        every attempt is one breaker call. A refusal, or an attempt whose failure
                   opened the circuit, ends the loop with CircuitOpen (retry_after = seconds
                   until half-open) at once, whatever attempts remain; a give-up by the
                   policy takes precedence, since its last outcome says more.
    judged by      a half-open probe: its status line and headers (the attempt calls
                   `on_head(status)` as they arrive, before any body), so the breaker
                   decides without waiting for the whole answer; every other attempt: its
                   whole outcome (a body that breaks off counts). Judged once either way.
    not failures   cancellation (the client left) and unexpected exceptions return the
                   attempt's ticket to the breaker unjudged and propagate.

The loop knows no HTTP library: an attempt is called with an `on_head` hook and returns
an `Outcome` (status, retry-after, the caller's own response value) or raises
UpstreamTimeout / UpstreamUnavailable.

Usage::

    async def send_once(on_head: HeadHook) -> Outcome[Response]:
        response = await client.request(..., on_head=on_head)
        return Outcome(status=response.status, value=response)

    policy = RetryPolicy(retries=settings.upstream_retries, max_wait=settings.retry_max_wait)
    result = await run_with_retries(send_once, policy, breaker=breaker, rng=random.Random())
    if result.outcome.error is not None:
        raise result.outcome.error          # 504 / 502
    response = result.outcome.value         # forward, adding x-should-retry: false
                                            # when result.gave_up
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from promptrelay.errors import CircuitOpen, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from promptrelay.resilience.backoff import Backoff
from promptrelay.resilience.breaker import Ticket, is_breaker_failure
from promptrelay.resilience.shared import CircuitBreaker

__all__ = [
    "RETRYABLE_STATUSES",
    "HeadHook",
    "Outcome",
    "RetryEvent",
    "RetryPolicy",
    "RetryResult",
    "is_retryable",
    "parse_retry_after",
    "run_with_retries",
]

T = TypeVar("T")

HeadHook = Callable[[int], Awaitable[None]]
"""Awaited by an attempt with the upstream's status as soon as its head has arrived."""

_REFUSED = "upstream is failing; the circuit breaker is open"

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


def is_retryable(status: int | None, *, timeout: bool, connection_error: bool) -> bool:
    if timeout or connection_error:
        return True
    return status in RETRYABLE_STATUSES


def parse_retry_after(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, else `retry-after` as seconds
    or an HTTP-date. Absent, non-finite or unparsable values give None; a negative value or
    a date in the past gives 0."""
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        value = _seconds(millis)
        if value is not None:
            return value / 1000.0
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    value = _seconds(raw)
    if value is not None:
        return value
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "-0000"
        return None
    return max(0.0, when.timestamp() - wall_clock())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _seconds(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return max(0.0, value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before retry number `attempt + 1`; None means stop.

    `attempt` counts failed attempts from 0 (the first try). `retries` excludes the first
    try. `deadline`, when set, bounds the seconds from the first attempt to the last wait's
    end.
    """

    retries: int = 2
    base: float = 0.5
    cap: float = 8.0
    max_wait: float = 60.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.base < 0 or self.cap < 0 or self.max_wait < 0:
            raise ValueError("retry policy values must be >= 0")

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.base, 2.0, self.cap)

    def compute(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**attempt))."""
        return self.backoff.jittered(attempt, rng)

    def delay(
        self,
        attempt: int,
        retry_after: float | None,
        rng: random.Random | None = None,
        *,
        elapsed: float = 0.0,
    ) -> float | None:
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            if retry_after > self.max_wait:
                return None
            wait = max(0.0, retry_after)
        else:
            wait = self.compute(attempt, rng=rng)
        if self.deadline is not None and elapsed + wait > self.deadline:
            return None
        return wait


# No slots on the generic dataclasses: Outcome[str](...) breaks with slots on 3.11.
@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one attempt produced, in terms the loop and the breaker understand.

    `value` is the caller's own response object (passed through untouched); `error` is the
    UpstreamError raised by the attempt, if any.
    """

    status: int | None = None
    value: T | None = None
    retry_after: float | None = None
    timeout: bool = False
    connection_error: bool = False
    error: UpstreamError | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return is_retryable(
            self.status, timeout=self.timeout, connection_error=self.connection_error
        )

    @property
    def breaker_failure(self) -> bool:
        return is_breaker_failure(
            self.status,
            timeout=self.timeout,
            connection_error=self.connection_error,
            client_disconnect=False,
        )


@dataclass(frozen=True)
class RetryEvent(Generic[T]):
    """Handed to on_retry just before sleeping."""

    attempt: int
    delay: float
    outcome: Outcome[T]


@dataclass(frozen=True)
class RetryResult(Generic[T]):
    """The last attempt's outcome. `gave_up`: it was retryable but the policy said stop,
    so the client should not retry at once either (x-should-retry: false)."""

    outcome: Outcome[T]
    attempts: int
    gave_up: bool


async def run_with_retries(
    attempt_fn: Callable[[HeadHook], Awaitable[Outcome[T]]],
    policy: RetryPolicy,
    *,
    breaker: CircuitBreaker,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[RetryEvent[T]], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RetryResult[T]:
    """Call `attempt_fn` until an outcome is final, the policy gives up or the breaker
    refuses (CircuitOpen). Cancellation (client gone) and unexpected exceptions return the
    attempt's ticket to the breaker unreported and propagate."""
    start = clock()
    attempt = 0
    while True:
        decision = await breaker.before_call()
        ticket = decision.ticket
        if ticket is None:
            raise CircuitOpen(_REFUSED, retry_after=decision.retry_after)
        verdict = _Verdict(breaker, ticket)
        try:  # inline, not a wrapper coroutine: every suspension of the call resumes through it
            outcome = await attempt_fn(verdict.on_head)
        except UpstreamTimeout as exc:
            outcome = Outcome(timeout=True, error=exc, retry_after=exc.retry_after)
        except UpstreamUnavailable as exc:
            outcome = Outcome(connection_error=True, error=exc, retry_after=exc.retry_after)
        except BaseException:
            await asyncio.shield(verdict.release())
            raise
        await verdict.record(failure=outcome.breaker_failure)
        if not outcome.retryable:
            return RetryResult(outcome, attempt + 1, gave_up=False)
        wait = policy.delay(attempt, outcome.retry_after, rng, elapsed=clock() - start)
        if wait is None:
            return RetryResult(outcome, attempt + 1, gave_up=True)
        reopen_in = breaker.machine.seconds_until_half_open()
        if reopen_in is not None:  # this attempt opened it: waiting would only delay the 503
            raise CircuitOpen(_REFUSED, retry_after=reopen_in)
        if on_retry is not None:
            on_retry(RetryEvent(attempt, wait, outcome))
        await sleep(wait)
        attempt += 1


class _Verdict:
    """The breaker's judgement of one attempt, handed over exactly once."""

    __slots__ = ("_breaker", "_given", "_ticket")

    def __init__(self, breaker: CircuitBreaker, ticket: Ticket) -> None:
        self._breaker = breaker
        self._ticket = ticket
        self._given = False

    async def on_head(self, status: int) -> None:
        """A probe is judged by its head; other attempts wait for their whole outcome."""
        if self._given or not self._ticket.probe:
            return
        self._given = True
        failure = is_breaker_failure(
            status, timeout=False, connection_error=False, client_disconnect=False
        )
        # Shielded: a client leaving now must not cut the verdict's publication short.
        await asyncio.shield(self._breaker.record(self._ticket, failure=failure))

    async def record(self, *, failure: bool) -> None:
        if not self._given:
            self._given = True
            await self._breaker.record(self._ticket, failure=failure)

    async def release(self) -> None:
        if not self._given:
            self._given = True
            await self._breaker.release(self._ticket)
