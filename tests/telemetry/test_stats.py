"""The column-wise fold of RequestStats and LatencyHistogram.record_many give the counts
that recording one event at a time gives."""

from __future__ import annotations

import random

import pytest

from promptrelay.core.events import CacheLookup, EventBus, RequestFinished, Retried
from promptrelay.telemetry.histogram import LatencyHistogram, upper_edge
from promptrelay.telemetry.stats import RequestStats


def test_record_many_matches_record_one_at_a_time() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-6, 2) for _ in range(2000)]
    values += [upper_edge(i) for i in range(0, 420, 7)]  # exactly on bucket edges
    values += [0.0, 1e-9, 1e5, 9e9, -0.002, -1.0]  # tiny, past the last edge, negative
    rng.shuffle(values)
    one, many = LatencyHistogram(), LatencyHistogram()
    for value in values:
        one.record(max(0.0, value))
    for start in range(0, len(values), 300):  # several batches into one histogram
        many.record_many(values[start : start + 300])
    assert many.counts == one.counts
    assert many.count == one.count == len(values)
    assert many.total == pytest.approx(one.total)
    assert many.max == one.max
    many.record_many([])
    assert many.count == len(values)


def _finished(rng: random.Random) -> RequestFinished:
    stream = rng.random() < 0.2
    seconds = rng.uniform(0.0002, 3.0)
    return RequestFinished(
        rng.choice(["/v1/messages", "/api/generate"]),
        rng.choice([200, 200, 200, 400, 499, 502, 529]),
        rng.choice(["HIT", "MISS", "BYPASS", ""]),
        seconds,
        seconds * rng.uniform(0.1, 1.0),
        seconds * rng.uniform(0.0, 1.1),  # upstream time may exceed ttfb: added time 0
        rng.randrange(5000),
        rng.randrange(50000),
        stream,
    )


def _lookup(rng: random.Random) -> CacheLookup:
    if rng.random() < 0.3:
        return CacheLookup(False, "claude_response")
    return CacheLookup(
        True,
        "claude_response",
        rng.uniform(100, 5000),
        rng.randrange(10000),
        rng.choice(["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6", ""]),
        rng.randrange(3000),
        rng.randrange(6000),
    )


def test_the_fold_counts_what_one_event_at_a_time_would() -> None:
    rng = random.Random(11)
    bus, stats = EventBus(), RequestStats()
    stats.subscribe(bus)
    finished = [_finished(rng) for _ in range(1000)]  # several full batches and a tail
    lookups = [_lookup(rng) for _ in range(700)]
    for event in finished:
        bus.emit(event)
        bus.emit(Retried(1, 0.1, 529))  # other events in between go elsewhere
    for lookup in lookups:
        bus.emit(lookup)
    # The same counts worked out one event at a time, the plain way:
    series: dict[tuple[str, int, str], LatencyHistogram] = {}
    added, stream_ttfb = LatencyHistogram(), LatencyHistogram()
    for event in finished:
        series.setdefault((event.route, event.status, event.cache), LatencyHistogram()).record(
            event.seconds
        )
        added.record(max(0.0, event.ttfb - event.upstream_seconds))
        if event.stream:
            stream_ttfb.record(event.ttfb)
    by_model: dict[str, list[int]] = {}
    for lookup in lookups:
        if lookup.hit:
            tokens = by_model.setdefault(lookup.model, [0, 0, 0])
            tokens[0] += lookup.saved_input_tokens
            tokens[1] += lookup.saved_output_tokens
            tokens[2] += 1
    assert stats.request_counts() == {key: h.count for key, h in series.items()}
    assert {key: h.counts for key, h in stats.series.items()} == {
        key: h.counts for key, h in series.items()
    }
    assert stats.requests == 1000 and stats.retries == 1000
    assert stats.errors == sum(1 for event in finished if event.status >= 500)
    assert stats.request_bytes == sum(event.request_bytes for event in finished)
    assert stats.response_bytes == sum(event.response_bytes for event in finished)
    assert stats.added.counts == added.counts
    assert stats.added.total == pytest.approx(added.total)
    assert stats.stream_ttfb.counts == stream_ttfb.counts
    assert stats.hits == sum(1 for lookup in lookups if lookup.hit)
    assert stats.misses == sum(1 for lookup in lookups if not lookup.hit)
    assert stats.saved_seconds == pytest.approx(sum(lookup.saved_ms for lookup in lookups) / 1000)
    assert stats.saved_tokens == sum(lookup.saved_tokens for lookup in lookups)
    assert stats.saved_by_model == by_model


def test_events_wait_in_a_bounded_batch_until_read() -> None:
    bus, stats = EventBus(), RequestStats()
    stats.subscribe(bus)
    emitted = 0
    while stats.requests == 0 and emitted < 1000:
        bus.emit(RequestFinished("/v1/messages", 200, "HIT", 0.001))
        emitted += 1
    assert 1 < emitted < 1000  # held, then folded together once the batch was full
    assert stats.requests == emitted
    bus.emit(RequestFinished("/v1/messages", 200, "HIT", 0.001))
    assert stats.requests == emitted  # pending again
    assert stats.snapshot()["total"] == emitted + 1  # a reader folds what is pending


def test_an_event_reaches_only_the_listeners_of_its_type() -> None:
    bus = EventBus()
    everything: list[object] = []
    retries: list[Retried] = []
    bus.subscribe(everything.append)
    bus.subscribe(retries.append, Retried)
    assert Retried in bus.wanted and CacheLookup in bus.wanted
    bus.emit(Retried(1, 0.5, 529))
    bus.emit(CacheLookup(False, "claude_response"))
    assert len(everything) == 2 and len(retries) == 1
    quiet = EventBus()
    quiet.subscribe(retries.append, Retried)
    assert RequestFinished not in quiet.wanted
    quiet.emit(RequestFinished("/v1/messages", 200, "HIT", 0.001))  # nobody: nothing happens
