"""The fake upstream's token buckets: pure rules with a fake clock, then over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from promptrelay.devtools.fake import FakeUpstream
from promptrelay.devtools.fake_limits import BucketSpec, FakeLimits

WALL = 1_800_000_000.0
BODY: dict[str, Any] = {
    "model": "claude-3-haiku-20240307",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello there"}],
}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _limits() -> tuple[FakeLimits, Clock]:
    clock = Clock()
    return FakeLimits(clock=clock, wall=lambda: WALL + clock.now), clock


def _specs(requests: float | None = 2, per_s: float = 1.0) -> dict[str, BucketSpec]:
    return {
        "requests": BucketSpec(requests, per_s),
        "input-tokens": BucketSpec(100, 10.0),
        "output-tokens": BucketSpec(None, 1.0),
    }


def test_requests_bucket_refuses_when_empty_and_refills() -> None:
    limits, clock = _limits()
    specs = _specs()
    assert limits.admit("k", specs, 10, 5).allowed
    assert limits.admit("k", specs, 10, 5).allowed
    refused = limits.admit("k", specs, 10, 5)
    assert not refused.allowed
    assert refused.limit == "requests"
    assert refused.retry_after == pytest.approx(1.0)
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    clock.now = 1.0
    assert limits.admit("k", specs, 10, 5).allowed


def test_input_tokens_bucket_refuses_whole_request() -> None:
    limits, _ = _limits()
    specs = _specs(requests=10)
    assert limits.admit("k", specs, 80, 1).allowed
    refused = limits.admit("k", specs, 50, 1)
    assert not refused.allowed and refused.limit == "input-tokens"
    assert refused.retry_after == pytest.approx(3.0)  # 30 tokens short at 10/s
    # Nothing was taken by the refused request: its requests bucket kept 9.
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "9"


def test_headers_give_limit_remaining_and_rfc3339_reset() -> None:
    limits, _ = _limits()
    verdict = limits.admit("k", _specs(requests=50, per_s=2.0), 40, 1)
    headers = verdict.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "50"
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert reset.timestamp() == pytest.approx(WALL + 0.5)
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "60"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "60"  # the tighter of the two
    assert "anthropic-ratelimit-output-tokens-limit" not in headers  # that bucket is off


def test_keys_have_their_own_buckets_and_shrinking_caps_the_level() -> None:
    limits, _ = _limits()
    assert limits.admit("a", _specs(requests=1), 1, 1).allowed
    assert limits.admit("b", _specs(requests=1), 1, 1).allowed
    assert not limits.admit("a", _specs(requests=1), 1, 1).allowed
    assert limits.admit("c", _specs(requests=10), 1, 1).allowed
    halved = limits.admit("c", _specs(requests=5), 1, 1)
    assert halved.headers["anthropic-ratelimit-requests-remaining"] == "4"


def test_output_reservation_is_settled_to_real_usage() -> None:
    limits, _ = _limits()
    specs = {**_specs(requests=10), "output-tokens": BucketSpec(100, 0.0)}
    assert limits.admit("k", specs, 1, 90).allowed
    assert not limits.admit("k", specs, 1, 90).allowed
    limits.settle("k", specs, reserved=90, used=10)
    assert limits.admit("k", specs, 1, 90).allowed


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


async def test_http_429_with_retry_after_and_knobs_changed_while_running(
    fake: FakeUpstream,
) -> None:
    fake.configure(limit_requests=2, limit_requests_per_s=0.001)
    url = fake.url + "/v1/messages"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.post(url, json=BODY, headers={"x-api-key": "k1"}) as r:
                statuses.append(r.status)
                last_headers, last_body = r.headers, await r.json()
        assert statuses == [200, 200, 429]
        assert last_body["error"]["type"] == "rate_limit_error"
        assert "requests" in last_body["error"]["message"]
        assert int(last_headers["retry-after"]) >= 1
        assert last_headers["anthropic-ratelimit-requests-limit"] == "2"
        assert last_headers["anthropic-ratelimit-requests-remaining"] == "0"
        async with session.post(url, json=BODY, headers={"x-api-key": "k2"}) as r:
            assert r.status == 200  # another key, its own bucket
        fake.configure(limit_requests=None)
        async with session.post(url, json=BODY, headers={"x-api-key": "k1"}) as r:
            assert r.status == 200
        assert fake.stats()["by_status"] == {"200": 4, "429": 1}
