"""Retry policy (pure) and the retry loop, with fake attempts, fake sleep and a fake clock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptrelay.errors import CircuitOpen, UpstreamTimeout, UpstreamUnavailable
from promptrelay.resilience.breaker import BreakerMachine, BreakerState
from promptrelay.resilience.retry import (
    HeadHook,
    Outcome,
    RetryEvent,
    RetryPolicy,
    is_retryable,
    parse_retry_after,
    run_with_retries,
)
from promptrelay.resilience.shared import CircuitBreaker
from tests.resilience.fakes import FakeClock

# -- policy ------------------------------------------------------------------------------


@given(
    attempt=st.integers(0, 2000),
    base=st.floats(0, 10, allow_nan=False),
    cap=st.floats(0, 100, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_compute_stays_within_full_jitter_bounds(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(base=base, cap=cap)
    wait = policy.compute(attempt, rng=random.Random(seed))
    assert 0 <= wait <= cap
    if attempt < 64:
        assert wait <= base * 2**attempt


class _RecordingRandom(random.Random):
    def __init__(self) -> None:
        super().__init__(0)
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return b


def test_compute_draws_uniformly_from_zero_to_the_capped_exponential() -> None:
    rng = _RecordingRandom()
    policy = RetryPolicy(base=0.5, cap=8.0)
    assert [policy.compute(n, rng=rng) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert all(a == 0 for a, _ in rng.calls)


def test_delay_honours_retry_after_up_to_max_wait() -> None:
    policy = RetryPolicy(retries=3, max_wait=60)
    assert policy.delay(0, 3.0) == 3.0
    assert policy.delay(0, 60.0) == 60.0
    assert policy.delay(0, 60.5) is None
    assert policy.delay(0, 0.0) == 0.0


def test_delay_gives_up_when_attempts_are_exhausted() -> None:
    policy = RetryPolicy(retries=2)
    rng = random.Random(1)
    assert policy.delay(0, None, rng) is not None
    assert policy.delay(1, None, rng) is not None
    assert policy.delay(2, None, rng) is None
    assert RetryPolicy(retries=0).delay(0, 1.0) is None


def test_delay_gives_up_when_the_deadline_would_pass() -> None:
    policy = RetryPolicy(retries=5, deadline=10.0)
    assert policy.delay(0, 4.0, elapsed=6.0) == 4.0
    assert policy.delay(0, 4.0, elapsed=6.5) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status, timeout=False, connection_error=False)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 413, 422, 501, None])
def test_non_retryable_statuses(status: int | None) -> None:
    assert not is_retryable(status, timeout=False, connection_error=False)


def test_timeouts_and_connection_errors_are_retryable() -> None:
    assert is_retryable(None, timeout=True, connection_error=False)
    assert is_retryable(None, timeout=False, connection_error=True)


# -- retry-after parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "9"}, 9.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"RETRY-AFTER-MS": "250"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after": "tomorrow"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "Wed, 99 Foo 2015 07:28:30"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, wall_clock=lambda: now) == expected


# -- the loop ----------------------------------------------------------------------------


class FakeSleep:
    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


class Script:
    """An attempt function answering each call with the next scripted outcome (the last
    one repeats); raising the scripted exceptions."""

    def __init__(self, outcomes: Sequence[Outcome[str] | Exception]) -> None:
        self.remaining = list(outcomes)
        self.calls = 0

    async def __call__(self, on_head: HeadHook) -> Outcome[str]:
        self.calls += 1
        item = self.remaining.pop(0) if len(self.remaining) > 1 else self.remaining[0]
        if isinstance(item, Exception):
            raise item
        return item


def make_breaker(clock: FakeClock, threshold: int = 100) -> CircuitBreaker:
    return CircuitBreaker(BreakerMachine(failure_threshold=threshold, clock=clock))


OVERLOADED = Outcome[str](status=529, value="overloaded")
OK = Outcome[str](status=200, value="answer")


async def test_always_529_makes_exactly_retries_plus_one_attempts() -> None:
    clock = FakeClock()
    attempt, sleep = Script([OVERLOADED]), FakeSleep()
    policy = RetryPolicy(retries=2)
    result = await run_with_retries(
        attempt, policy, breaker=make_breaker(clock), sleep=sleep, rng=random.Random(3)
    )
    assert attempt.calls == 3
    assert result.attempts == 3
    assert result.gave_up
    assert result.outcome.status == 529 and result.outcome.value == "overloaded"
    assert len(sleep.delays) == 2
    assert all(0 <= d <= min(8.0, 0.5 * 2**n) for n, d in enumerate(sleep.delays))


async def test_success_after_retries_is_returned_without_giving_up() -> None:
    clock = FakeClock()
    attempt, sleep = Script([OVERLOADED, OK]), FakeSleep()
    events: list[RetryEvent[str]] = []
    result = await run_with_retries(
        attempt,
        RetryPolicy(),
        breaker=make_breaker(clock),
        sleep=sleep,
        rng=random.Random(0),
        on_retry=events.append,
    )
    assert result.outcome.ok and result.outcome.value == "answer"
    assert not result.gave_up and result.attempts == 2
    assert [(e.attempt, e.outcome.status) for e in events] == [(0, 529)]
    assert events[0].delay == sleep.delays[0]


async def test_400_is_never_retried_and_does_not_count_against_upstream() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=1)
    attempt, sleep = Script([Outcome[str](status=400, value="bad request")]), FakeSleep()
    result = await run_with_retries(attempt, RetryPolicy(), breaker=breaker, sleep=sleep)
    assert attempt.calls == 1 and sleep.delays == []
    assert not result.gave_up and result.outcome.status == 400
    assert breaker.state is BreakerState.CLOSED


async def test_429_with_retry_after_sleeps_at_least_that_long() -> None:
    clock = FakeClock()
    limited = Outcome[str](status=429, retry_after=1.0)
    attempt, sleep = Script([limited, OK]), FakeSleep()
    result = await run_with_retries(
        attempt, RetryPolicy(), breaker=make_breaker(clock, threshold=1), sleep=sleep
    )
    assert sleep.delays == [1.0]
    assert result.outcome.ok


async def test_retry_after_beyond_max_wait_gives_up_at_once() -> None:
    clock = FakeClock()
    limited = Outcome[str](status=429, retry_after=120.0)
    attempt, sleep = Script([limited]), FakeSleep()
    result = await run_with_retries(
        attempt, RetryPolicy(max_wait=60), breaker=make_breaker(clock), sleep=sleep
    )
    assert attempt.calls == 1 and sleep.delays == []
    assert result.gave_up


async def test_stops_at_once_when_the_breaker_opens() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=2)
    attempt, sleep = Script([OVERLOADED]), FakeSleep()
    with pytest.raises(CircuitOpen) as caught:
        await run_with_retries(attempt, RetryPolicy(retries=5), breaker=breaker, sleep=sleep)
    assert attempt.calls == 2
    assert len(sleep.delays) == 1  # slept once, then the breaker refused the third try
    assert caught.value.retry_after == pytest.approx(60)
    assert caught.value.status == 503


async def test_open_breaker_refuses_before_any_attempt() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerMachine(clock=clock))
    breaker.machine.trip(30)
    attempt = Script([OK])
    with pytest.raises(CircuitOpen) as caught:
        await run_with_retries(attempt, RetryPolicy(), breaker=breaker, sleep=FakeSleep())
    assert attempt.calls == 0
    assert caught.value.retry_after == pytest.approx(30)


async def test_raised_timeouts_and_connection_errors_are_retried_and_surfaced() -> None:
    clock = FakeClock()
    timeout = UpstreamTimeout("upstream took too long")
    attempt = Script([UpstreamUnavailable("connection refused"), timeout])
    breaker = make_breaker(clock)
    result = await run_with_retries(attempt, RetryPolicy(), breaker=breaker, sleep=FakeSleep())
    assert attempt.calls == 3 and result.gave_up
    assert result.outcome.timeout and result.outcome.error is timeout
    assert breaker.snapshot()["failures_in_window"] == 3


async def test_deadline_stops_retrying() -> None:
    clock = FakeClock()
    limited = Outcome[str](status=503, retry_after=4.0)
    attempt, sleep = Script([limited]), FakeSleep(clock)
    policy = RetryPolicy(retries=10, deadline=10.0)
    result = await run_with_retries(
        attempt, policy, breaker=make_breaker(clock), sleep=sleep, clock=clock
    )
    assert sleep.delays == [4.0, 4.0]
    assert attempt.calls == 3 and result.gave_up


async def test_cancelled_probe_is_released_for_the_next_caller() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=1)
    breaker.machine.trip(0)
    started = asyncio.Event()

    async def hang(on_head: HeadHook) -> Outcome[str]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    task = asyncio.create_task(run_with_retries(hang, RetryPolicy(), breaker=breaker))
    await started.wait()
    assert breaker.machine.probe_in_flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.machine.probe_in_flight
    result = await run_with_retries(Script([OK]), RetryPolicy(), breaker=breaker)
    assert result.outcome.ok
    assert breaker.state is BreakerState.CLOSED


async def test_a_probe_is_judged_by_its_head_before_its_body_arrives() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=1)
    breaker.machine.trip(0)
    seen: list[BreakerState] = []

    async def head_then_broken_body(on_head: HeadHook) -> Outcome[str]:
        await on_head(200)
        seen.append(breaker.state)
        if len(seen) == 1:
            raise UpstreamUnavailable("the body broke off")
        return OK

    result = await run_with_retries(
        head_then_broken_body, RetryPolicy(retries=1), breaker=breaker, sleep=FakeSleep()
    )
    assert seen == [BreakerState.CLOSED, BreakerState.CLOSED]
    assert result.outcome.ok and result.attempts == 2
    assert breaker.snapshot()["failures_in_window"] == 0  # judged once, by its head


async def test_a_probe_with_a_failing_head_reopens_the_circuit_at_once() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock, threshold=1)
    breaker.machine.trip(0)
    seen: list[BreakerState] = []

    async def overloaded(on_head: HeadHook) -> Outcome[str]:
        await on_head(529)
        seen.append(breaker.state)
        return OVERLOADED

    with pytest.raises(CircuitOpen) as caught:
        await run_with_retries(overloaded, RetryPolicy(), breaker=breaker, sleep=FakeSleep())
    assert seen == [BreakerState.OPEN]
    assert caught.value.retry_after == pytest.approx(60)


async def test_other_attempts_are_judged_by_their_whole_outcome() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)

    async def head_then_broken_body(on_head: HeadHook) -> Outcome[str]:
        await on_head(200)
        raise UpstreamUnavailable("the body broke off")

    result = await run_with_retries(
        head_then_broken_body, RetryPolicy(retries=0), breaker=breaker, sleep=FakeSleep()
    )
    assert result.outcome.connection_error
    assert breaker.snapshot()["failures_in_window"] == 1
