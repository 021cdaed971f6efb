"""The governor's async shell: lanes, priorities, refusals, cancellation.

Concurrency (initial_concurrency=1) drives these tests: a waiter goes when a permit is
released, so they need no clock; the one timeout test waits 50 ms of real time and
asserts only that it was refused.
"""

from __future__ import annotations

import asyncio

import pytest

from promptrelay.errors import RateLimited
from promptrelay.resilience.governor import BATCH, INTERACTIVE, Governor, Permit
from promptrelay.resilience.ratelimit import Cost
from tests.resilience.fakes import FakeClock

COST = Cost(1.0, 10.0, 10.0)
HEADERS = [
    (b"anthropic-ratelimit-requests-limit", b"100"),
    (b"anthropic-ratelimit-requests-remaining", b"99"),
]


async def _queued(governor: Governor, priority: int, order: list[str], name: str) -> Permit:
    permit = await governor.acquire("key", COST, priority)
    order.append(name)
    return permit


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_interactive_goes_before_batch_first_come_first_served_within_each() -> None:
    governor = Governor(initial_concurrency=1)
    first = await governor.acquire("key", COST)
    order: list[str] = []
    tasks = []
    for name, priority in (("b1", BATCH), ("i1", INTERACTIVE), ("b2", BATCH), ("i2", INTERACTIVE)):
        tasks.append(asyncio.create_task(_queued(governor, priority, order, name)))
        await _settle()
    assert governor.snapshot()["queued"] == 4
    permit = first
    for _ in tasks:
        permit.release(200)  # no headers yet: still one at a time
        await _settle()
        permit = next(t.result() for t in tasks if t.done() and not t.result().done)
    assert order == ["i1", "i2", "b1", "b2"]
    assert governor.stats.queued_total == 4


async def test_a_full_lane_refuses_at_once_with_retry_after() -> None:
    governor = Governor(initial_concurrency=1, max_queue=1, max_wait=30)
    await governor.acquire("key", COST)
    waiting = asyncio.create_task(governor.acquire("key", COST))
    await _settle()
    with pytest.raises(RateLimited) as refused:
        await governor.acquire("key", COST)
    assert refused.value.status == 429 and refused.value.retry_after == 30
    assert governor.stats.rejected == 1
    waiting.cancel()


async def test_a_wait_past_max_wait_is_refused() -> None:
    governor = Governor(initial_concurrency=1, max_wait=0.05)
    await governor.acquire("key", COST)
    with pytest.raises(RateLimited):
        await governor.acquire("key", COST)
    assert governor.snapshot()["queued"] == 0


async def test_a_predicted_wait_past_max_wait_is_refused_before_queueing() -> None:
    governor = Governor(initial_concurrency=4, max_wait=5)
    permit = await governor.acquire("key", COST)
    # 100 requests a minute, all but one used, full again in 60 s: ~1.6 per second.
    headers = [
        (b"anthropic-ratelimit-requests-limit", b"100"),
        (b"anthropic-ratelimit-requests-remaining", b"0"),
        (b"anthropic-ratelimit-requests-reset", b"2100-01-01T00:00:00Z"),
    ]
    permit.release(200, headers)
    with pytest.raises(RateLimited) as refused:
        await governor.acquire("key", COST)
    assert refused.value.retry_after is not None and refused.value.retry_after > 5
    assert governor.stats.queued_total == 0


async def test_a_waiter_that_leaves_frees_its_place() -> None:
    governor = Governor(initial_concurrency=1)
    first = await governor.acquire("key", COST)
    order: list[str] = []
    leaving = asyncio.create_task(_queued(governor, INTERACTIVE, order, "leaves"))
    await _settle()
    staying = asyncio.create_task(_queued(governor, INTERACTIVE, order, "stays"))
    await _settle()
    leaving.cancel()
    await _settle()
    first.release(200)
    await _settle()
    assert order == ["stays"]
    assert staying.done()
    assert governor.snapshot()["keys"]


async def test_headers_lift_the_initial_limit_and_keys_have_their_own_lanes() -> None:
    governor = Governor(initial_concurrency=1)
    permit = await governor.acquire("sk-secret-1", COST)
    other = await governor.acquire("sk-secret-2", COST)  # another key: its own lane
    permit.release(200, HEADERS)
    permits = [await governor.acquire("sk-secret-1", COST) for _ in range(5)]
    assert len(permits) == 5
    other.release(200)
    snapshot = governor.snapshot()
    assert len(snapshot["keys"]) == 2  # type: ignore[arg-type]  # a dict by construction
    assert "secret" not in str(snapshot)


async def test_a_429_pauses_the_key_for_everyone(clock: FakeClock) -> None:
    # The governor's clock is the test's: a machine that stalls past the 30 ms between
    # the 429 and the next acquire cannot end the pause before it is asked for.
    governor = Governor(initial_concurrency=4, clock=clock)
    permit = await governor.acquire("key", COST)
    permit.release(429, [(b"retry-after-ms", b"30")])
    assert governor.stats.upstream_429 == 1
    waiting = asyncio.ensure_future(governor.acquire("key", COST))
    await asyncio.sleep(0)
    clock.advance(0.03)
    await waiting  # waits out the pause
    assert governor.stats.queued_total == 1


async def test_far_from_the_limit_headers_are_read_every_eighth_answer_errors_always() -> None:
    governor = Governor(initial_concurrency=4)
    permit = await governor.acquire("key", COST)
    permit.release(200, HEADERS)  # 99 of 100 left: roomy
    (await governor.acquire("key", COST)).release(429, [(b"retry-after-ms", b"1")])
    assert governor.stats.upstream_429 == 1  # an error is read even while roomy
    halved = [
        (b"anthropic-ratelimit-requests-limit", b"50"),
        (b"anthropic-ratelimit-requests-remaining", b"10"),
    ]

    def limit() -> object:
        (view,) = governor.snapshot()["keys"].values()  # type: ignore[attr-defined]  # dict
        return view["buckets"]["requests"]["limit"]

    for _ in range(7):
        (await governor.acquire("key", COST)).release(200, halved)
    assert limit() == 100  # seven answers not read
    (await governor.acquire("key", COST)).release(200, halved)
    assert limit() == 50  # the eighth is
