"""The pure parts: TTL policy, value codec, glob matching, health state machine."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from promptrelay.cache import DEFAULT_TTLS, Backoff, CacheEntry, TtlPolicy, content_type_of
from promptrelay.cache.codec import FORMAT_VERSION, DecodeError, decode_entry, encode_entry
from promptrelay.cache.glob import glob_escape, glob_matcher, glob_to_regex
from promptrelay.cache.health import RedisHealth
from promptrelay.cache.invalidation import decode_message, encode_message
from promptrelay.cache.redis import redact_url
from promptrelay.cache.writebuffer import PendingWrite, WriteBuffer
from promptrelay.settings import Settings
from tests.cache.conftest import FakeClock

# -- TTL policy ------------------------------------------------------------------------


def test_ttl_policy_defaults_match_the_design() -> None:
    policy = TtlPolicy.from_settings(Settings())
    assert {name: policy.ttl_for(name) for name in DEFAULT_TTLS} == {
        "claude_response": 1800,
        "template_content": 3600,
        "provider_config": 7200,
        "metrics": 60,
    }
    assert policy.ttl_for("something_else") == 3600


def test_ttl_policy_follows_settings() -> None:
    policy = TtlPolicy.from_settings(Settings(cache_ttl=10, cache_ttl_metrics=5))
    assert policy.ttl_for("metrics") == 5
    assert policy.ttl_for("unknown") == 10
    assert policy.ttl_for("claude_response") == 1800


def test_ttl_policy_is_immutable_and_validated() -> None:
    policy = TtlPolicy()
    with pytest.raises(TypeError):
        policy.by_type["metrics"] = 1  # type: ignore[index]  # the point of the test
    with pytest.raises(ValueError):
        TtlPolicy(default=0)


def test_content_type_of_key() -> None:
    assert content_type_of("pr:tenant:claude_response:abc") == "claude_response"
    assert content_type_of("pr:ns:with:colons:metrics:abc") == "metrics"
    assert content_type_of("weird") == "unknown"


# -- codec -----------------------------------------------------------------------------

_entries = st.builds(
    CacheEntry,
    value=st.binary(max_size=2000),
    stored_at=st.floats(0, 4e9),
    content_type=st.text(max_size=30),
    expires_at=st.none() | st.floats(0, 4e9),
    meta=st.none()
    | st.dictionaries(
        st.text(max_size=10),
        st.text(max_size=20) | st.integers(-(2**53), 2**53) | st.floats(-1e9, 1e9),
        max_size=4,
    ),
)


@given(_entries)
def test_codec_round_trip(entry: CacheEntry) -> None:
    data = encode_entry(entry)
    assert data[0] == FORMAT_VERSION
    decoded = decode_entry(data)
    assert decoded.value == entry.value
    assert (decoded.stored_at, decoded.content_type, decoded.expires_at) == (
        entry.stored_at,
        entry.content_type,
        entry.expires_at,
    )
    assert dict(decoded.meta or {}) == dict(entry.meta or {})


@given(st.binary(max_size=300))
def test_codec_rejects_garbage_only_with_decode_error(data: bytes) -> None:
    try:
        decode_entry(data)
    except DecodeError:
        pass


def test_codec_refuses_oversized_metadata() -> None:
    with pytest.raises(ValueError):
        encode_entry(CacheEntry(b"", 0.0, "x", meta={"big": "x" * 70_000}))


# -- glob ------------------------------------------------------------------------------

GLOB_CASES = [
    ("pr:tenantA:*", "pr:tenantA:claude_response:1", True),
    ("pr:tenantA:*", "pr:tenantAB:claude_response:1", False),
    ("pr:tenant?:*", "pr:tenantB:x", True),
    ("pr:tenant[AB]:*", "pr:tenantC:x", False),
    ("pr:tenant[^AB]:*", "pr:tenantC:x", True),
    ("pr:[a-c]*", "pr:b", True),
    ("pr:[c-a]*", "pr:b", True),  # reversed range, as Redis
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("a[\\]]b", "a]b", True),
    ("a[]b", "a]b", False),
    ("a.b", "axb", False),  # regex metacharacters are literal
    ("a+(b)", "a+(b)", True),
    ("*", "anything:at:all", True),
    ("a*", "a\nb", True),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), GLOB_CASES)
def test_glob_matcher(pattern: str, key: str, expected: bool) -> None:
    assert glob_matcher(pattern)(key) is expected


async def test_glob_agrees_with_redis_scan_match(redis_server: object) -> None:
    """The memory tier must clear exactly what SCAN MATCH would in Redis."""
    keys = [
        "pr:tenantA:claude_response:1",
        "pr:tenantAB:metrics:2",
        "pr:tenantB:template_content:3",
        "pr:tenant]:x:4",
        "pr:t*:x:5",
        "pr:t?:x:6",
        "pr:a-b:x:7",
        "other",
        "pr:tenant^:x:8",
    ]
    patterns = [
        "pr:tenant?:*",
        "pr:tenant[AB]*",
        "pr:tenant[^A]:*",
        "pr:t\\*:*",
        "pr:t\\?:*",
        "pr:[a-]*",
        "pr:tenant[]]:*",
        "pr:tenant[\\]]:*",
        "pr:tenant[^]:*",
        "pr:tenant[A",
        "pr:*:x:*",
        "*[0-4]",
        "pr:tenant[]*",
        "pr:a-b:*",
        "p*r*",
    ]
    client = Redis.from_url(redis_server.url)  # type: ignore[attr-defined]  # RedisServer
    try:
        for key in keys:
            await client.set(key, b"1")
        for pattern in patterns:
            found = {k.decode() async for k in client.scan_iter(match=pattern, count=1000)}
            expected = {key for key in keys if glob_matcher(pattern)(key)}
            assert found == expected, (pattern, glob_to_regex(pattern))
    finally:
        await client.aclose()


def test_glob_regex_is_valid_for_odd_patterns() -> None:
    for pattern in ["[", "[^", "\\", "[a-", "[\\", "**", "[]]"]:
        re.compile(glob_to_regex(pattern))


# -- health ----------------------------------------------------------------------------


def test_health_goes_down_after_three_consecutive_timeouts() -> None:
    health = RedisHealth(timeout_threshold=3, clock=FakeClock())
    assert health.state == "down"  # nothing known before the first probe
    assert health.probe_succeeded() is True
    assert (health.record_timeout(), health.record_timeout()) == (False, False)
    health.record_success()  # a success resets the count
    assert (health.record_timeout(), health.record_timeout()) == (False, False)
    assert health.record_timeout() is True
    assert health.state == "down"
    assert health.record_timeout() is False  # already down


def test_health_connection_error_goes_down_at_once() -> None:
    health = RedisHealth(clock=FakeClock())
    health.probe_succeeded()
    assert health.record_connection_error() is True
    assert health.record_connection_error() is False


def test_health_cool_off_doubles_to_a_cap_and_resets_when_stable() -> None:
    clock = FakeClock()
    health = RedisHealth(backoff=Backoff(0.5, 2, 10), stable_after=30, clock=clock)
    health.probe_succeeded()
    clock.advance(100)
    health.record_connection_error()
    waits = []
    for _ in range(7):
        waits.append(health.cool_off())
        health.probe_failed()
    assert waits == [0.5, 1, 2, 4, 8, 10, 10]
    health.probe_succeeded()
    clock.advance(31)  # stable for long enough: next outage starts short again
    health.record_connection_error()
    assert health.cool_off() == 0.5


def test_health_flapping_keeps_backing_off() -> None:
    clock = FakeClock()
    health = RedisHealth(backoff=Backoff(0.5, 2, 10), stable_after=30, clock=clock)
    health.probe_succeeded()
    clock.advance(100)
    health.record_connection_error()
    assert health.cool_off() == 0.5
    health.probe_succeeded()
    clock.advance(1)  # down again one second after coming up
    health.record_connection_error()
    assert health.cool_off() == 1.0


def test_redact_url() -> None:
    assert redact_url("redis://user:pw@host:6380/2?password=pw") == "redis://host:6380/2"
    assert redact_url("rediss://:pw@[::1]:6379/0") == "rediss://[::1]:6379/0"
    assert "pw" not in redact_url("redis://:pw@host:notaport/0")


@given(st.text(alphabet="ab*?[]\\^-:", max_size=12), st.text(alphabet="ab*?[]\\^-:", max_size=12))
def test_glob_escape_matches_exactly_the_key(key: str, other: str) -> None:
    matches = glob_matcher(glob_escape(key))
    assert matches(key)
    assert matches(other) is (other == key)


# -- write buffer ----------------------------------------------------------------------


def _write(size: int = 10, *, delete: bool = False) -> PendingWrite:
    return PendingWrite(None if delete else CacheEntry(b"v", 0.0, "x"), 1000, size)


def test_write_buffer_newest_write_wins_and_moves_to_the_back() -> None:
    buffer = WriteBuffer(max_items=10, max_bytes=1000)
    buffer.put("a", _write(10))
    buffer.put("b", _write(20))
    newer = _write(30)
    buffer.put("a", newer)
    assert (len(buffer), buffer.bytes) == (2, 50)
    batch = buffer.take(max_items=10, max_bytes=1000)
    assert list(batch) == ["b", "a"] and batch["a"] is newer
    assert buffer.lookup("a") is newer and not buffer.idle  # in flight, still visible
    buffer.done()
    assert buffer.lookup("a") is None and buffer.idle


def test_write_buffer_bounds_and_batches() -> None:
    buffer = WriteBuffer(max_items=3, max_bytes=100)
    assert [buffer.put(k, _write(40)) for k in "abc"] == [True, True, False]  # bytes
    assert buffer.put("d", _write(10)) is True
    assert buffer.put("e", _write(1)) is False  # items
    assert list(buffer.take(max_items=10, max_bytes=50)) == ["a", "b"]  # 80 >= 50 stops
    buffer.done()
    assert list(buffer.take(max_items=1, max_bytes=1)) == ["d"]  # at least one


def test_write_buffer_discard_reports_only_sets() -> None:
    buffer = WriteBuffer(max_items=10, max_bytes=1000)
    buffer.put("pr:a:1", _write())
    buffer.put("pr:a:2", _write(delete=True))
    buffer.put("pr:b:3", _write())
    assert buffer.discard_matching(glob_matcher("pr:a:*")) == {"pr:a:1"}
    assert buffer.discard("pr:b:3") is True and buffer.discard("pr:b:3") is False
    assert buffer.bytes == 0 and buffer.clear() == 0


# -- invalidation messages -------------------------------------------------------------


def test_invalidation_message_round_trip_and_garbage() -> None:
    assert decode_message(encode_message("me", "pr:t:*")) == ("me", "pr:t:*")
    for garbage in [b"", b"[]", b"{", b'{"o": 1, "p": "x"}', b'{"o": "x"}', b"\xff"]:
        assert decode_message(garbage) is None
