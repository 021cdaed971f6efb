"""Every upstream call, through the circuit breaker: the one resilient client.

    send()         ->  run_with_retries  ->  breaker.before_call  ->  UpstreamClient.request
                            ^  backoff / retry-after     (one breaker call per attempt)
    passthrough()  ->  breaker.before_side_call  ->  UpstreamClient.request   (one attempt)

`send` is the Messages call: retried, and it may be the half-open probe. `passthrough`
is every other /v1 call (Message Batch create, poll and results, file uploads, ...):
never retried, since some are not idempotent and the Anthropic SDKs retry them on their
own; counted in the breaker (5xx, timeouts and connection errors are failures); refused
at once while the circuit is not closed, so it never serves as the half-open probe.
Both emit `UpstreamFinished` for each answer that came back.

The governor sits around each attempt of `send`, inside the retry loop: every request
that leaves takes from the upstream key's buckets, retries included, and a retry after a
429 waits in the same lane as everyone else until the key's pause is over. Its refusal
(RateLimited: the wait would pass GOVERNOR_MAX_WAIT) is not an upstream failure: it
leaves the loop at once and the breaker ticket goes back unjudged.

The whole call, retries and waits included, lives within UPSTREAM_TIMEOUT: each attempt
gets the time that is left as its own total timeout, so a hung upstream is a timeout
the breaker counts, and the caller has its 504 within the budget. A half-open probe is
judged as soon as the upstream's status line and headers arrive (`on_head`); the request
itself still has its whole budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from promptrelay.core.events import EventBus, Retried, UpstreamFinished
from promptrelay.errors import CircuitOpen, UpstreamError, UpstreamTimeout
from promptrelay.resilience.breaker import is_breaker_failure
from promptrelay.resilience.governor import INTERACTIVE, Governor, Permit
from promptrelay.resilience.ratelimit import Cost
from promptrelay.resilience.retry import (
    HeadHook,
    Outcome,
    RetryEvent,
    RetryPolicy,
    parse_retry_after,
    run_with_retries,
)
from promptrelay.resilience.shared import CircuitBreaker
from promptrelay.upstream.client import UpstreamClient, UpstreamResponse

__all__ = ["ResilientUpstream", "Sent"]

_REFUSED = "upstream is failing; the circuit breaker is open"


@dataclass(slots=True)
class Sent:
    response: UpstreamResponse
    attempts: int
    gave_up: bool  # retryable failure, retries exhausted: tell SDKs not to retry either


class ResilientUpstream:
    def __init__(
        self,
        upstream: UpstreamClient,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        *,
        budget: float,
        events: EventBus,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        governor: Governor | None = None,
    ) -> None:
        self.upstream = upstream
        self.governor = governor
        self.breaker = breaker
        self._policy = policy
        self._budget = budget
        self._events = events
        self._rng = rng or random.Random()
        self._clock = clock

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        stream: bool,
        budget: float | None = None,
        cost: Cost | None = None,
        priority: int = INTERACTIVE,
    ) -> Sent:
        """Raises CircuitOpen, UpstreamTimeout or UpstreamUnavailable when no answer came,
        RateLimited when the governor refused to wait that long. `budget` (a model's
        timeout from the providers file) narrows UPSTREAM_TIMEOUT; `cost` (estimate_cost
        of the body) lets the governor pace the attempts."""
        deadline = self._clock() + min(budget or self._budget, self._budget)
        attempt = _Attempt(self, method, path, headers, body, stream, deadline, cost, priority)
        result = await run_with_retries(
            attempt,
            self._policy,
            breaker=self.breaker,
            rng=self._rng,
            on_retry=self._retried,
            clock=self._clock,
        )
        if result.outcome.error is not None:
            raise result.outcome.error
        assert result.outcome.value is not None
        return Sent(result.outcome.value, result.attempts, result.gave_up)

    def _retried(self, event: RetryEvent[UpstreamResponse]) -> None:
        # Only failed answers are retried, and those were read whole: nothing to release.
        self._events.emit(
            Retried(attempt=event.attempt + 1, delay=event.delay, status=event.outcome.status)
        )

    async def passthrough(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None,
        stream: bool,
    ) -> UpstreamResponse:
        """One attempt, no retries. Raises CircuitOpen (the circuit is not closed),
        UpstreamTimeout or UpstreamUnavailable; any HTTP status is a response."""
        decision = await self.breaker.before_side_call()
        ticket = decision.ticket
        if ticket is None:
            raise CircuitOpen(_REFUSED, retry_after=decision.retry_after)
        started = time.perf_counter()
        try:
            response = await self.upstream.request(
                method, path, headers=headers, body=body, stream=stream
            )
        except UpstreamError:
            await self.breaker.record(ticket, failure=True)
            raise
        except BaseException:  # the client left, or a bug: says nothing about the upstream
            await asyncio.shield(self.breaker.release(ticket))
            raise
        failed = is_breaker_failure(
            response.status, timeout=False, connection_error=False, client_disconnect=False
        )
        await self.breaker.record(ticket, failure=failed)
        self._events.emit(UpstreamFinished(response.status, time.perf_counter() - started, 1))
        return response


class _Attempt:
    """One call's attempt, awaited once per try by the retry loop: a slotted object, not
    a closure, so a call in flight holds one object here instead of a cell per name."""

    __slots__ = (
        "body",
        "cost",
        "deadline",
        "headers",
        "key",
        "method",
        "path",
        "priority",
        "stream",
        "upstream",
    )

    def __init__(
        self,
        upstream: ResilientUpstream,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        stream: bool,
        deadline: float,
        cost: Cost | None,
        priority: int,
    ) -> None:
        self.upstream = upstream
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.stream = stream
        self.deadline = deadline
        self.cost = cost
        self.priority = priority
        self.key = headers.get("x-api-key", "")

    async def __call__(self, on_head: HeadHook) -> Outcome[UpstreamResponse]:
        # the governor's permit: at once when it fits (no coroutine), else waited for
        upstream, cost = self.upstream, self.cost
        governor, permit = upstream.governor, None
        if governor is not None and cost is not None:
            permit = governor.try_acquire(self.key, cost) or await governor.acquire(
                self.key, cost, self.priority
            )
        left = self.deadline - upstream._clock()
        if left <= 0:
            raise _timed_out(permit)
        try:
            response = await upstream.upstream.request(
                self.method,
                self.path,
                headers=self.headers,
                body=self.body,
                stream=self.stream,
                timeout=left,
                on_head=on_head,
            )
        except BaseException:
            if permit is not None:
                permit.release(0)  # no answer came
            raise
        if permit is not None:
            permit.release(response.status, response.headers)
        return _outcome(response)


def _outcome(response: UpstreamResponse) -> Outcome[UpstreamResponse]:
    retry_after = None
    if response.status >= 400:
        retry_after = parse_retry_after(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}
        )
    return Outcome(status=response.status, value=response, retry_after=retry_after)


def _timed_out(permit: Permit | None) -> UpstreamTimeout:
    if permit is not None:
        permit.release(0)
    return UpstreamTimeout("the upstream did not answer within UPSTREAM_TIMEOUT")
