"""Pure telemetry logic on synthetic snapshots and a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import random

import pytest

from promptrelay.core.events import (
    BreakerMoved,
    CacheLookup,
    EventBus,
    MemoryGuardActed,
    RequestFinished,
)
from promptrelay.telemetry.alerts import AlertManager, Thresholds, evaluate
from promptrelay.telemetry.guard import GuardPolicy, MemoryGuard
from promptrelay.telemetry.histogram import LatencyHistogram, WindowedHistogram
from promptrelay.telemetry.history import FIELDS, History, parse_window
from promptrelay.telemetry.prices import builtin_price, chain_prices
from promptrelay.telemetry.recommend import recommend
from promptrelay.telemetry.snapshot import Snapshot, Tuning
from promptrelay.telemetry.stats import RequestStats


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CALM = Snapshot(rss_bytes=100, memory_limit_bytes=1000)
FAILING = Snapshot(
    rss_bytes=100, memory_limit_bytes=1000, requests_window=20, errors_window=10
)  # 50 %: critical


# -- rules -------------------------------------------------------------------------------


def keys(snapshot: Snapshot, thresholds: Thresholds | None = None) -> dict[str, str]:
    return {c.key: c.severity for c in evaluate(snapshot, thresholds or Thresholds())}


def test_calm_snapshot_raises_nothing():
    assert evaluate(CALM, Thresholds()) == []


@pytest.mark.parametrize(
    ("snapshot", "key", "severity"),
    [
        (Snapshot(rss_bytes=800, memory_limit_bytes=1000), "memory", "medium"),
        (Snapshot(rss_bytes=960, memory_limit_bytes=1000), "memory", "critical"),
        (Snapshot(cpu_percent=95), "cpu", "medium"),
        (Snapshot(added_p95_ms=5200), "slow", "medium"),
        (Snapshot(stream_ttfb_p95_ms=6000), "slow", "medium"),
        (Snapshot(requests_window=10, errors_window=1), "error_rate", "high"),
        (Snapshot(requests_window=10, errors_window=6), "error_rate", "critical"),
        (Snapshot(loop_lag_ms=150), "loop_lag", "medium"),
        (Snapshot(loop_lag_ms=1500), "loop_lag", "high"),
        (Snapshot(breaker_state="open"), "breaker", "high"),
        (Snapshot(redis_state="down"), "redis", "medium"),
    ],
)
def test_each_rule_fires_with_its_severity(snapshot, key, severity):
    assert keys(snapshot) == {key: severity}


def test_just_below_thresholds_is_quiet():
    snapshot = Snapshot(
        rss_bytes=799,
        memory_limit_bytes=1000,
        cpu_percent=89.9,
        added_p95_ms=4999,
        requests_window=100,
        errors_window=9,
        loop_lag_ms=99,
        breaker_state="half_open",
        redis_state="disabled",
    )
    assert keys(snapshot) == {}


def test_error_rate_needs_the_minimum_count():
    assert keys(Snapshot(requests_window=9, errors_window=9)) == {}
    assert keys(Snapshot(requests_window=3, errors_window=3), Thresholds(min_requests=3)) == {
        "error_rate": "critical"
    }


def test_slow_rule_ignores_generation_time():
    # a 30 s answer whose time is all upstream: added time and stream TTFB are small
    assert keys(Snapshot(added_p95_ms=3, stream_ttfb_p95_ms=800, miss_p50_ms=30000)) == {}


def test_conditions_carry_value_and_threshold():
    (condition,) = evaluate(Snapshot(requests_window=20, errors_window=4), Thresholds())
    assert (condition.value, condition.threshold) == (0.2, 0.1)
    assert "4 of 20" in condition.message


# -- escalation, resolution, cooldown ----------------------------------------------------


def run(manager: AlertManager, snapshot: Snapshot) -> list[tuple[str, str, str]]:
    return [(n.kind, n.key, n.severity) for n in manager.step(evaluate(snapshot, Thresholds()))]


def test_fires_once_while_it_persists_then_resolves():
    clock = Clock()
    manager = AlertManager(cooldown=60, escalate_after=3, clock=clock)
    breaker_open = Snapshot(breaker_state="open")
    assert run(manager, breaker_open) == [("firing", "breaker", "high")]
    clock.advance(5)
    assert run(manager, breaker_open) == []
    assert [a["key"] for a in manager.active()] == ["breaker"]
    clock.advance(5)
    assert run(manager, CALM) == [("resolved", "breaker", "high")]
    assert manager.active() == []


def test_escalates_after_consecutive_periods_up_to_critical():
    clock = Clock()
    manager = AlertManager(cooldown=60, escalate_after=3, clock=clock)
    lagging = Snapshot(loop_lag_ms=200)  # medium
    seen = []
    for _ in range(10):
        seen += run(manager, lagging)
        clock.advance(5)
    assert seen == [
        ("firing", "loop_lag", "medium"),
        ("escalated", "loop_lag", "high"),  # period 4
        ("escalated", "loop_lag", "critical"),  # period 7
    ]
    assert manager.active()[0]["severity"] == "critical"
    assert run(manager, CALM) == [("resolved", "loop_lag", "critical")]


def test_an_interruption_restarts_the_escalation_count():
    clock = Clock()
    manager = AlertManager(cooldown=0, escalate_after=3, clock=clock)
    lagging = Snapshot(loop_lag_ms=200)
    kinds = []
    for snapshot in [lagging, lagging, CALM, lagging, lagging, lagging]:
        kinds += [kind for kind, _, _ in run(manager, snapshot)]
        clock.advance(5)
    assert kinds == ["firing", "resolved", "firing"]


def test_cooldown_silences_a_flapping_alert_per_key():
    clock = Clock()
    manager = AlertManager(cooldown=60, escalate_after=100, clock=clock)
    assert run(manager, FAILING) == [("firing", "error_rate", "critical")]
    clock.advance(10)
    assert run(manager, CALM) == [("resolved", "error_rate", "critical")]
    clock.advance(10)  # 20 s after firing: inside the cooldown
    assert run(manager, FAILING) == []
    assert [a["key"] for a in manager.active()] == ["error_rate"]  # active, just silent
    clock.advance(10)
    assert run(manager, CALM) == []  # its firing was never delivered: no resolved either
    # another key is not affected by error_rate's cooldown
    assert run(manager, Snapshot(redis_state="down")) == [("firing", "redis", "medium")]
    clock.advance(41)  # 61 s after the first firing
    assert run(manager, FAILING) == [
        ("firing", "error_rate", "critical"),
        ("resolved", "redis", "medium"),
    ]


def test_recent_keeps_a_bounded_log():
    clock = Clock()
    manager = AlertManager(cooldown=0, escalate_after=100, clock=clock, keep=5)
    for _ in range(20):
        run(manager, Snapshot(redis_state="down"))
        run(manager, CALM)
    assert len(manager.recent) == 5


# -- recommendations ---------------------------------------------------------------------


def areas(snapshot: Snapshot, tuning: Tuning | None = None) -> list[dict[str, object]]:
    return recommend(snapshot, tuning or Tuning())


def test_no_advice_when_all_is_well():
    assert areas(CALM) == []


def test_memory_advice_names_the_setting_and_a_smaller_value():
    snapshot = Snapshot(rss_bytes=90, memory_limit_bytes=100, memory_cache_bytes=50)
    advice = areas(snapshot, Tuning(memory_cache_max_bytes=64 * 2**20, gc_threshold=0.7))
    cache = next(a for a in advice if a.get("setting") == "MEMORY_CACHE_MAX_BYTES")
    assert cache["area"] == "memory"
    assert cache["suggested"] == 32 * 2**20
    assert cache["evidence"]["memory_fraction"] == 0.9  # type: ignore[index]
    assert any(a.get("setting") == "GC_THRESHOLD" and a["suggested"] == 0.6 for a in advice)


def test_cpu_advice_suggests_more_workers_until_one_per_core():
    (advice,) = areas(Snapshot(cpu_percent=97), Tuning(workers=1, cpu_count=4))
    assert (advice["setting"], advice["suggested"]) == ("WORKERS", 2)
    (advice,) = areas(Snapshot(cpu_percent=97), Tuning(workers=4, cpu_count=4))
    assert "setting" not in advice


def test_slow_misses_with_a_low_hit_rate_suggest_a_longer_ttl():
    snapshot = Snapshot(hits=2, misses=98, miss_p50_ms=4000)
    (advice,) = areas(snapshot, Tuning(cache_ttl_claude_response=1800))
    assert advice["area"] == "cache"
    assert (advice["setting"], advice["suggested"]) == ("CACHE_TTL_CLAUDE_RESPONSE", 7200)
    assert advice["evidence"] == {"hit_ratio": 0.02, "miss_p50_ms": 4000.0}
    # fast misses or a good hit rate: nothing to say
    assert areas(Snapshot(hits=2, misses=98, miss_p50_ms=300)) == []
    assert areas(Snapshot(hits=60, misses=40, miss_p50_ms=4000)) == []


def test_waiting_for_connections_suggests_max_sockets():
    snapshot = Snapshot(pool_limit=50, pool_in_use=50, pool_waiting=12)
    (advice,) = areas(snapshot, Tuning(max_sockets=50))
    assert (advice["setting"], advice["suggested"]) == ("MAX_SOCKETS", 100)
    assert advice["evidence"]["pool_waiting"] == 12  # type: ignore[index]


def test_flapping_breaker_and_redis_down():
    advice = areas(Snapshot(breaker_opens_recent=4, redis_state="down"))
    assert [a["area"] for a in advice] == ["upstream", "redis"]
    assert advice[0]["evidence"]["breaker_opens_10m"] == 4  # type: ignore[index]
    assert "memory tier" in str(advice[1]["message"])


def test_every_advice_has_the_four_fields():
    busy = Snapshot(
        rss_bytes=99,
        memory_limit_bytes=100,
        cpu_percent=99,
        loop_lag_ms=500,
        requests_window=100,
        errors_window=50,
        hits=1,
        misses=99,
        miss_p50_ms=9000,
        pool_limit=1,
        pool_in_use=1,
        pool_waiting=3,
        breaker_opens_recent=5,
        redis_state="down",
    )
    advice = areas(busy)
    assert len(advice) >= 8
    for item in advice:
        assert {"area", "severity", "message", "evidence"} <= item.keys()
        assert item["severity"] in ("low", "medium", "high", "critical")


# -- memory guard ------------------------------------------------------------------------


def test_guard_policy_rate_limits_and_hysteresis():
    clock = Clock()
    policy = GuardPolicy(threshold=0.7, critical=0.9, hysteresis=0.05, min_interval=30, clock=clock)
    assert policy.decide(0.5).trim_fraction == 0
    step = policy.decide(0.75)
    assert (step.trim_fraction, step.collect, step.enter_aggressive) == (0.25, True, False)
    clock.advance(10)
    assert not policy.decide(0.75).collect  # rate-limited
    clock.advance(21)
    assert policy.decide(0.75).collect
    step = policy.decide(0.92)  # critical: enters aggressive mode and acts at once
    assert (step.enter_aggressive, step.trim_fraction, step.collect) == (True, 0.5, True)
    clock.advance(11)  # aggressive: a third of the interval
    assert policy.decide(0.8).collect
    clock.advance(11)
    assert policy.decide(0.68).leave_aggressive is False  # inside the hysteresis band
    assert policy.aggressive
    step = policy.decide(0.64)
    assert step.leave_aggressive and not policy.aggressive and not step.collect


def test_memory_guard_trims_collects_and_reports_each_action():
    clock = Clock()
    bus = EventBus()
    seen: list[object] = []
    bus.subscribe(seen.append)
    trims: list[float] = []

    def trim(fraction: float) -> int:
        trims.append(fraction)
        return 1234

    import gc

    before = gc.get_threshold()
    guard = MemoryGuard(GuardPolicy(threshold=0.7, critical=0.9, clock=clock), trim, bus)
    try:
        guard.check(0.95)
        assert gc.get_threshold()[0] < before[0]  # tighter in aggressive mode
        actions = [e.action for e in seen if isinstance(e, MemoryGuardActed)]
        assert actions == ["aggressive_on", "trim", "collect"]
        assert trims == [0.5]
        clock.advance(100)
        guard.check(0.5)
        assert gc.get_threshold() == before
        assert [e.action for e in seen if isinstance(e, MemoryGuardActed)][-1] == "aggressive_off"
    finally:
        guard.close()
    assert gc.get_threshold() == before


# -- statistics --------------------------------------------------------------------------


def test_histogram_percentiles_are_close_and_bounded():
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(-4, 1) for _ in range(20000))
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert abs(histogram.quantile(q) - exact) / exact < 0.06
    assert len(histogram.counts) == 420  # memory does not grow with traffic


def test_windowed_histogram_forgets_old_slots():
    clock = Clock(0.0)
    recent = WindowedHistogram(60, 6, clock)
    for t in range(120):  # one event a second for two minutes
        clock.now = float(t)
        recent.record(clock.now, 0.001 * (t + 1))
    assert 50 <= recent.merged().count <= 60
    assert recent.merged().max == pytest.approx(0.12)
    assert recent.merged().quantile(0.0001) > 0.05  # the first minute is gone
    clock.now = 500.0
    assert recent.merged().count == 0


def test_request_stats_rates_savings_and_bytes():
    clock = Clock()
    stats = RequestStats(error_window=10, clock=clock)
    for i in range(10):
        stats(
            RequestFinished(
                "/v1/messages",
                500 if i < 3 else 200,
                "MISS",
                seconds=0.5,
                ttfb=0.5,
                upstream_seconds=0.49,
                request_bytes=100,
                response_bytes=400,
            )
        )
    stats(
        CacheLookup(
            hit=True,
            content_type="claude_response",
            saved_ms=1500,
            saved_tokens=3000,
            model="claude-sonnet-4-6",
            saved_input_tokens=1000,
            saved_output_tokens=2000,
        )
    )
    rate, requests, errors = stats.error_rate()
    assert (rate, requests, errors) == (0.3, 10, 3)
    stats.mark()  # the sampler's mark, after those requests
    snap = stats.snapshot()
    assert snap["bytes"] == {"request": 1000, "response": 4000}
    assert snap["cache"]["saved"]["dollars"] == pytest.approx((1000 * 3 + 2000 * 15) / 1e6)
    assert snap["cache"]["saved"]["upstream_seconds"] == 1.5
    assert snap["added_latency"]["p50_ms"] == pytest.approx(10, rel=0.06)
    assert snap["by_route"]["/v1/messages"]["count"] == 10
    assert snap["statuses"] == {"5xx": 3, "2xx": 7}
    assert stats.recent_added().count == 10
    clock.advance(5)
    stats.mark()
    assert stats.error_rate() == (0.3, 10, 3)  # still inside the 10 s window
    clock.advance(10)
    stats.mark()
    assert stats.error_rate() == (0.0, 0, 0)  # slid out of the window
    assert stats.recent_added().count == 0
    assert stats.added.count == 10
    assert stats.rate(60) == pytest.approx(10 / 15)


def test_breaker_opens_are_counted_in_a_window():
    clock = Clock()
    stats = RequestStats(clock=clock)
    for _ in range(3):
        stats(BreakerMoved("closed", "open", "failures"))
        clock.advance(100)
    assert stats.breaker_opens(600) == 3
    clock.advance(450)  # opened at +0, +100, +200; now +750
    assert stats.breaker_opens(600) == 1


def test_prices_chain_prefers_the_providers_file():
    assert builtin_price("claude-opus-4-5-20251101") == (5.0, 25.0)
    assert builtin_price("claude-opus-4-1") == (15.0, 75.0)
    assert builtin_price("gpt-4o") is None
    price = chain_prices(lambda model: (1.0, 2.0) if model == "house-model" else None)
    assert price("house-model") == (1.0, 2.0)
    assert price("claude-haiku-4-5") == (1.0, 5.0)


# -- history -----------------------------------------------------------------------------


def test_history_rings_are_bounded_and_pick_the_resolution():
    history = History()
    point = tuple(float(i) for i in range(len(FIELDS)))
    for second in range(0, 2 * 86400, 5):  # two days of 5 s samples
        history.add(float(second), point)
    assert len(history.fine.points) == 360
    assert len(history.coarse.points) == 1440
    hour = history.series(900, now=2 * 86400.0)
    assert hour["resolution_s"] == 10.0
    assert 90 <= len(hour["points"]) <= 92
    day = history.series(86400, now=2 * 86400.0)
    assert day["resolution_s"] == 60.0
    assert day["fields"][0] == "t"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400)]
)
def test_parse_window(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "2d", "1w", "-5m", "abc"])
def test_parse_window_refuses(text):
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


def test_a_silenced_alert_does_not_escalate_inside_the_cooldown_and_speaks_after():
    clock = Clock()
    manager = AlertManager(cooldown=60, escalate_after=2, clock=clock)
    lagging = Snapshot(loop_lag_ms=200)
    assert run(manager, lagging) == [("firing", "loop_lag", "medium")]
    clock.advance(5)
    run(manager, CALM)
    notices = []
    for _ in range(10):  # 50 s more, all inside the cooldown
        clock.advance(5)
        notices += run(manager, lagging)
    assert notices == []
    assert manager.active()[0]["severity"] == "critical"  # escalated, silently
    clock.advance(10)  # 65 s after the first firing
    assert run(manager, lagging) == [("firing", "loop_lag", "critical")]


# -- memory limit ------------------------------------------------------------------------


def test_memory_limit_prefers_setting_then_cgroup_then_ram(tmp_path):
    import psutil

    from promptrelay.telemetry.system import memory_limit

    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_limit(123, (v2, v1)) == (123, "setting")
    assert memory_limit(None, (v2, v1)) == (psutil.virtual_memory().total, "total_ram")
    v2.write_text("max\n")  # cgroup v2 without a limit
    v1.write_text(f"{1 << 62}\n")  # cgroup v1 "unlimited"
    assert memory_limit(None, (v2, v1))[1] == "total_ram"
    v1.write_text("536870912\n")
    assert memory_limit(None, (v2, v1)) == (536870912, "cgroup")
    v2.write_text("268435456\n")
    assert memory_limit(None, (v2, v1)) == (268435456, "cgroup")


def test_savings_by_model_stay_bounded_whatever_models_clients_name():
    stats = RequestStats(clock=Clock())
    for index in range(500):  # model names are client input (the offline provider echoes them)
        model = "claude-sonnet-4-6" if index % 2 else f"made-up-{index}"
        stats(
            CacheLookup(
                hit=True,
                content_type="claude_response",
                model=model,
                saved_input_tokens=1000,
                saved_output_tokens=2000,
            )
        )
    dollars, unpriced = stats.saved_dollars()
    assert len(stats.saved_by_model) <= 64
    assert unpriced == 250  # every made-up model, tracked or folded
    assert dollars == pytest.approx(250 * (1000 * 3 + 2000 * 15) / 1e6)
