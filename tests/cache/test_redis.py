"""RedisTier against a real redis-server: degradation, recovery, write-behind, hygiene."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from promptrelay.cache import Backoff, RedisTier
from promptrelay.cache.codec import encode_entry
from promptrelay.settings import Settings
from tests.cache.conftest import (
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    MakeRedisTier,
    entry,
    eventually,
)
from tests.fixtures_redis import RedisServer, free_port

KEY = "pr:t1:claude_response:k"
BOUND = 2 * SOCKET_TIMEOUT + 0.1  # the slowest any call may take


async def test_starting_with_redis_down_then_it_comes_up_by_itself() -> None:
    server = RedisServer(free_port())  # not started yet
    states: list[str] = []
    tier = RedisTier(
        server.url,
        socket_timeout=SOCKET_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        on_state=states.append,
    )
    try:
        started = time.monotonic()
        await tier.start()
        assert time.monotonic() - started < BOUND
        assert tier.state == "down" and states == ["down"]

        started = time.monotonic()
        assert await tier.get(KEY) is None
        await tier.set(KEY, entry(), 60)
        assert time.monotonic() - started < 0.01
        assert tier.stats()["skipped"] >= 1 and tier.stats()["write_discarded"] == 1

        server.start()
        await eventually(lambda: tier.state == "up", timeout=5)
        assert states == ["down", "up"]
        await tier.set(KEY, entry(b"now"), 60)
        await tier.flush()
        got = await tier.get(KEY)
        assert got is not None and got.value == b"now"
    finally:
        await tier.close()
        server.close()


async def test_probe_backoff_grows_while_redis_stays_down() -> None:
    tier = RedisTier(
        f"redis://127.0.0.1:{free_port()}/0",
        socket_timeout=SOCKET_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
        backoff=Backoff(base=0.01, factor=2, cap=0.08),
    )
    try:
        await tier.start()
        assert tier.stats()["cool_off"] == 0.01
        await eventually(lambda: tier.stats()["cool_off"] == 0.08, timeout=3)
        assert tier.state == "down"
    finally:
        await tier.close()


async def test_kill_under_200_concurrent_operations_raises_nothing(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    tier = await make_redis_tier()
    for i in range(50):
        await tier.set(f"pr:t1:claude_response:{i}", entry(), 60)
    await tier.flush()
    stop = asyncio.Event()

    async def worker(n: int) -> int:
        ops = 0
        while not stop.is_set():
            key = f"pr:t1:claude_response:{(n + ops) % 50}"
            if ops % 10 == 3:
                await tier.set(key, entry(b"w"), 60)
            elif ops % 50 == 7:
                await tier.delete(key)
            elif ops % 200 == 11:
                await tier.clear(f"pr:t1:claude_response:{n % 5}*")
            else:
                await tier.get(key)
            ops += 1
            await asyncio.sleep(0)
        return ops

    workers = [asyncio.create_task(worker(n)) for n in range(200)]
    await eventually(lambda: tier.stats()["hits"] > 500, timeout=5)
    redis_server.kill()
    await eventually(lambda: tier.state == "down", timeout=2)
    skipped = tier.stats()["skipped"]
    await eventually(lambda: tier.stats()["skipped"] > skipped + 1000, timeout=5)
    stop.set()
    results = await asyncio.gather(*workers, return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert all(isinstance(r, int) and r > 0 for r in results)

    redis_server.start()
    await eventually(lambda: tier.state == "up", timeout=5)
    await tier.set(KEY, entry(b"back"), 60)
    await tier.flush()
    got = await tier.get(KEY)
    assert got is not None and got.value == b"back"


async def test_sigstop_bounds_every_call_then_skips_redis_until_it_recovers(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    states: list[str] = []
    tier = await make_redis_tier(on_state=states.append)
    await tier.set(KEY, entry(b"kept"), 60)
    await tier.flush()
    redis_server.stop_signal()

    async def timed_get() -> float:
        started = time.monotonic()
        assert await tier.get(KEY) is None
        return time.monotonic() - started

    durations = await asyncio.gather(*(timed_get() for _ in range(200)))
    assert max(durations) <= BOUND, max(durations)
    assert tier.state == "down" and states == ["up", "down"]

    # Down: no network call at all, so no waiting.
    before = tier.stats()
    started = time.monotonic()
    for _ in range(100):
        assert await tier.get(KEY) is None
    await tier.delete(KEY)
    await tier.clear("pr:t1:*")
    assert time.monotonic() - started < 0.05
    after = tier.stats()
    assert after["skipped"] - before["skipped"] == 102
    assert after["timeouts"] == before["timeouts"]

    redis_server.cont_signal()
    await eventually(lambda: tier.state == "up", timeout=5)
    assert states == ["up", "down", "up"]
    got = await tier.get(KEY)
    assert got is not None and got.value == b"kept"


async def test_sequential_timeouts_mark_it_down_after_three(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    tier = await make_redis_tier()
    redis_server.stop_signal()
    for expected in ("up", "up", "down"):
        started = time.monotonic()
        assert await tier.get(KEY) is None
        assert time.monotonic() - started <= BOUND
        assert tier.state == expected
    redis_server.cont_signal()


async def test_writes_never_wait_for_a_slow_redis(
    redis_server: RedisServer, make_redis_tier: MakeRedisTier
) -> None:
    tier = await make_redis_tier()
    redis_server.stop_signal()
    started = time.monotonic()
    for i in range(100):
        await tier.set(f"pr:t1:claude_response:{i}", entry(), 60)
    assert time.monotonic() - started < 0.02
    redis_server.cont_signal()


async def test_corrupt_values_are_misses_and_get_deleted(
    make_redis_tier: MakeRedisTier, raw_redis: Redis
) -> None:
    tier = await make_redis_tier()
    valid = encode_entry(entry(b"fine"))
    garbage = [
        b"garbage",
        b"",
        bytes([2]) + valid[1:],  # another format version
        valid[:5],  # truncated header
        b"\x01\x00\x02[]",  # header is not an object
        b'\x01\x00\x0b{"c": 1.5}',  # wrong field types
    ]
    keys = [f"pr:t1:claude_response:bad{i}" for i in range(len(garbage))]
    for key, value in zip(keys, garbage, strict=True):
        await raw_redis.set(key, value)
    for key in keys:
        assert await tier.get(key) is None
    await tier.flush()
    assert await raw_redis.exists(*keys) == 0
    assert tier.stats()["decode_errors"] == len(garbage)


async def test_full_write_buffer_drops_and_counts(
    make_redis_tier: MakeRedisTier, raw_redis: Redis
) -> None:
    tier = await make_redis_tier(write_queue_max=5)
    accepted = [tier.set_nowait(f"pr:t1:x:{i}", entry(), 60) for i in range(10)]
    assert accepted == [True] * 5 + [False] * 5
    assert tier.stats()["write_dropped"] == 5
    await tier.flush()
    assert await raw_redis.dbsize() == 5
    assert tier.stats()["writes"] == 5


async def test_newest_buffered_write_wins_and_delete_cancels_it(
    make_redis_tier: MakeRedisTier, raw_redis: Redis
) -> None:
    tier = await make_redis_tier()
    tier.set_nowait(KEY, entry(b"one"), 60)
    tier.set_nowait(KEY, entry(b"two"), 60)
    got = await tier.get(KEY)  # reads see buffered writes
    assert got is not None and got.value == b"two"
    assert await tier.delete(KEY) is True
    await tier.flush()
    assert await raw_redis.get(KEY) is None


async def test_entries_larger_than_the_limit_are_not_written(
    make_redis_tier: MakeRedisTier, raw_redis: Redis
) -> None:
    tier = await make_redis_tier(max_entry_bytes=1000)
    assert tier.set_nowait(KEY, entry(b"x" * 1001), 60) is False
    await tier.flush()
    assert await raw_redis.exists(KEY) == 0
    assert tier.stats()["rejected"] == 1


async def test_ttl_is_set_in_milliseconds(make_redis_tier: MakeRedisTier, raw_redis: Redis) -> None:
    tier = await make_redis_tier()
    await tier.set(KEY, entry(), 12.5)
    await tier.flush()
    assert 12_000 < await raw_redis.pttl(KEY) <= 12_500


async def test_clear_walks_every_scan_page(
    make_redis_tier: MakeRedisTier, raw_redis: Redis
) -> None:
    tier = await make_redis_tier(scan_count=50)
    async with raw_redis.pipeline(transaction=False) as pipe:
        for i in range(1200):
            pipe.set(f"pr:A:claude_response:{i}", b"x")
        for i in range(300):
            pipe.set(f"pr:B:claude_response:{i}", b"x")
        await pipe.execute()
    assert await tier.clear("pr:A:*") == 1200
    assert await raw_redis.dbsize() == 300


async def test_password_never_appears_in_stats_repr_logs_or_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cret-Pa55word-xyzzy"
    caplog.set_level(logging.DEBUG)
    with RedisServer(extra_args=["--requirepass", secret]) as server:
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        good = RedisTier(url, socket_timeout=SOCKET_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
        wrong = RedisTier(
            f"redis://:wrong-{secret}@127.0.0.1:{server.port}/0",
            socket_timeout=SOCKET_TIMEOUT,
            connect_timeout=CONNECT_TIMEOUT,
        )
        settings = Settings(
            redis_enabled=True,
            redis_host="127.0.0.1",
            redis_port=server.port,
            redis_password=SecretStr(secret),
        )
        from_settings = RedisTier.from_settings(settings)
        try:
            for tier in (good, wrong, from_settings):
                await tier.start()
            assert good.state == "up" and from_settings.state == "up"
            assert wrong.state == "down"
            assert wrong.stats()["last_error"] == "AuthenticationError"
            await good.set(KEY, entry(b"secret-free"), 60)
            await good.flush()
            got = await from_settings.get(KEY)
            assert got is not None and got.value == b"secret-free"
            for tier in (good, wrong, from_settings):
                shown = repr(tier) + repr(tier._client) + str(tier.stats()) + tier.location
                assert secret not in shown
                assert tier.location == f"redis://127.0.0.1:{server.port}/0"
        finally:
            for tier in (good, wrong, from_settings):
                await tier.close()
    assert secret not in caplog.text
    with pytest.raises(ValueError) as raised:
        RedisTier(f"redis://:{secret}@127.0.0.1:notaport/0")
    assert secret not in str(raised.value) and raised.value.__suppress_context__


async def test_a_failing_state_listener_does_not_break_the_tier(
    make_redis_tier: MakeRedisTier, caplog: pytest.LogCaptureFixture
) -> None:
    def listener(state: str) -> None:
        raise RuntimeError("listener bug")

    tier = await make_redis_tier(on_state=listener)
    assert tier.state == "up"
    await tier.set(KEY, entry(), 60)
    await tier.flush()
    assert await tier.get(KEY) is not None
    assert "on_state listener failed" in caplog.text


async def test_close_is_idempotent_and_flushes(
    make_redis_tier: MakeRedisTier, raw_redis: Redis
) -> None:
    tier = await make_redis_tier()
    tier.set_nowait(KEY, entry(), 60)
    await tier.close()
    await tier.close()
    assert await raw_redis.exists(KEY) == 1
