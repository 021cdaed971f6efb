"""The governor's decisions (KeyState), its header parser and its token estimator: pure."""

from __future__ import annotations

import base64
import struct

import pytest

from promptrelay.resilience.estimate import estimate_cost, image_tokens
from promptrelay.resilience.ratelimit import Cost, KeyState, Observed, parse_limits

ONE = Cost(1.0, 10.0, 5.0)


def _answer(remaining: float, limit: float = 50, full_in: float | None = None) -> Observed:
    return Observed(200, {"requests": (limit, remaining, full_in)})


def test_before_any_headers_at_most_initial_concurrency_in_flight() -> None:
    state = KeyState(initial_concurrency=4)
    for _ in range(4):
        assert state.wait(ONE, 0.0) == 0
        state.take(ONE, 0.0)
    assert state.wait(ONE, 0.0) is None  # blocked until an answer comes back
    state.observe(ONE, Observed(200, {}), 0.1)
    assert state.wait(ONE, 0.1) == 0


def test_first_headers_teach_the_bucket_minus_what_is_still_in_flight() -> None:
    state = KeyState(initial_concurrency=4)
    for _ in range(4):
        state.take(ONE, 0.0)
    # 49 left after the first answer, 3 more of ours not answered yet: 46 to use.
    state.observe(ONE, _answer(49, full_in=1.0), 0.0)
    assert state.learned and state.concurrency_limit() is None
    assert state.buckets["requests"].level == pytest.approx(46)
    for _ in range(46):
        assert state.wait(ONE, 0.0) == 0
        state.take(ONE, 0.0)
    wait = state.wait(ONE, 0.0)
    assert wait is not None and wait > 0


def test_refill_rate_is_a_lower_bound_from_reset_and_round_trip() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    # 40 short of 50, full again in 4 s: 10 per second, taken as 9.
    state.observe(ONE, Observed(200, {"requests": (50, 10, 3.0)}, round_trip=1.0), 0.0)
    bucket = state.buckets["requests"]
    # Lower bound: one less (remaining is rounded down) over reset + the round trip.
    assert bucket.rate == pytest.approx(0.95 * 39 / 4.001)
    bucket.level = 0.0
    assert state.wait(ONE, 0.0) == pytest.approx(1 / bucket.rate)
    assert state.wait(ONE, 1 / bucket.rate) == 0


def test_a_loose_bound_only_raises_the_rate_a_new_limit_resets_it() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    state.observe(ONE, _answer(10, full_in=4.0), 0.0)
    clear = state.buckets["requests"].rate
    state.observe(ONE, _answer(46, full_in=1.0), 0.0)  # deficit 3 of 50: loose, lower
    assert state.buckets["requests"].rate == clear
    state.observe(ONE, _answer(10, limit=25, full_in=None), 0.0)
    assert state.buckets["requests"].rate == pytest.approx(25 / 60)
    assert not state.buckets["requests"].measured


def test_small_deficits_do_not_set_the_rate_limit_over_60_does() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    state.observe(ONE, _answer(59, limit=60, full_in=0.01), 0.0)  # rounding noise
    assert state.buckets["requests"].rate == pytest.approx(1.0)


def test_the_upstream_lowers_our_level_and_a_halved_limit_is_followed() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    state.observe(ONE, _answer(50, limit=50), 0.0)
    state.take(ONE, 0.0)
    state.take(ONE, 0.0)
    state.observe(ONE, _answer(10, limit=25), 0.0)
    bucket = state.buckets["requests"]
    assert bucket.limit == 25 and bucket.level == 10  # min(ours 48, theirs 10)
    state.observe(ONE, _answer(12, limit=25), 0.0)
    assert bucket.level == 12  # nothing of ours out: theirs is the truth


def test_a_429_pauses_the_whole_key_until_retry_after() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    state.observe(ONE, Observed(429, {}, retry_after=3.0), 1.0)
    assert state.wait(ONE, 1.0) == pytest.approx(3.0)
    assert state.wait(ONE, 4.0) == 0


def test_529_halves_the_concurrency_and_successes_grow_it_back() -> None:
    state = KeyState(initial_concurrency=4)
    for _ in range(8):
        state.take(ONE, 0.0)
    state.observe(ONE, _answer(40), 0.0)
    state.observe(ONE, Observed(529, {}), 0.0)
    assert state.cap == pytest.approx(3.5)  # 7 in flight when it came: half of them
    state.observe(ONE, Observed(529, {}), 0.0)
    assert state.cap == pytest.approx(1.75)
    assert state.wait(ONE, 0.0) is None  # 5 still in flight
    for _ in range(5):
        state.observe(ONE, _answer(40), 0.0)
    assert state.cap is not None and state.cap > 1.75


def test_input_and_output_buckets_bound_by_tokens() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    state.observe(ONE, Observed(200, {"input-tokens": (1000, 1000, None)}), 0.0)
    big = Cost(1.0, 900.0, 0.0)
    state.take(big, 0.0)
    wait = state.wait(Cost(1.0, 200.0, 0.0), 0.0)
    assert wait == pytest.approx(100 / (1000 / 60))
    # Larger than the whole bucket: it goes once the bucket is full, not never.
    assert state.wait(Cost(1.0, 5000.0, 0.0), 60.0) == 0


def test_parse_limits_reads_anthropic_headers() -> None:
    headers = [
        (b"anthropic-ratelimit-requests-limit", b"50"),
        (b"anthropic-ratelimit-requests-remaining", b"20"),
        (b"anthropic-ratelimit-requests-reset", b"2026-01-01T00:00:30Z"),
        (b"Anthropic-RateLimit-Input-Tokens-Limit", b"40000"),
        (b"anthropic-ratelimit-input-tokens-remaining", b"39000"),
        (b"anthropic-ratelimit-output-tokens-limit", b"junk"),
        (b"anthropic-ratelimit-output-tokens-remaining", b"1"),
        (b"content-type", b"application/json"),
    ]
    wall = 1767225600.0  # 2026-01-01T00:00:00Z
    limits = parse_limits(headers, wall)
    assert limits == {
        "requests": (50.0, 20.0, pytest.approx(30.0)),
        "input-tokens": (40000.0, 39000.0, None),
    }


def _png(width: int, height: int) -> str:
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\0" * 8
    return base64.b64encode(head).decode()


def test_estimate_counts_text_by_four_characters_and_max_tokens_as_output() -> None:
    body = {
        "model": "m",
        "max_tokens": 300,
        "system": "s" * 40,
        "messages": [
            {"role": "user", "content": "u" * 400},
            {"role": "assistant", "content": [{"type": "text", "text": "a" * 40}]},
        ],
    }
    assert estimate_cost(body) == Cost(1.0, 120.0, 300.0)


def test_images_by_width_times_height_over_750_long_edge_1568() -> None:
    assert image_tokens({"type": "base64", "media_type": "image/png", "data": _png(200, 150)}) == 40
    big = image_tokens({"type": "base64", "media_type": "image/png", "data": _png(3136, 1000)})
    assert big == round(1568 * 500 / 750)
    assert image_tokens({"type": "url", "url": "https://example.invalid/x.jpg"}) == 1600
    body = {
        "max_tokens": 1,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "data": _png(200, 150)}},
                    {"type": "text", "text": "x" * 8},
                ],
            }
        ],
    }
    assert estimate_cost(body).input_tokens == 2 + 40


def test_a_shared_view_is_only_ever_lowered_by_the_headers() -> None:
    state = KeyState(initial_concurrency=4)
    state.take(ONE, 0.0)
    state.observe(ONE, Observed(200, {"requests": (25, 20, None)}, shared=True), 0.0)
    state.take(ONE, 0.0)
    state.take(ONE, 0.0)
    state.observe(ONE, Observed(200, {"requests": (25, 24, None)}, shared=True), 0.0)
    state.observe(ONE, Observed(200, {"requests": (25, 24, None)}, shared=True), 0.0)
    # Nothing of ours out, but another process's may be: no resync up to 24.
    assert state.buckets["requests"].level == pytest.approx(18)
