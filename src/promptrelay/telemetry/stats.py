"""Request, cache, upstream, breaker, batching and memory-guard statistics from events.

`RequestStats` is the one per-request listener. On the request path it only appends the
event to a short list (at most `_BATCH` long); the list is folded into the counts when it
is full or when anything is read. The fold works a column at a time: the events are
transposed by `zip`, sums and sorts run in C, a histogram takes a sorted column with one
pair of binary searches per bucket it touches (a batch's latencies fall in a few), and
grouping by (route, status, cache) is one C-level pass per distinct key. Percentiles,
windows, rates, dollars and the Prometheus metrics (`PrometheusExporter.sync`) are
worked out from the counts when someone asks.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from itertools import compress
from operator import sub
from typing import Any, TypeVar

from promptrelay.core.events import (
    BatchFlushed,
    BreakerMoved,
    CacheLookup,
    Coalesced,
    Event,
    EventBus,
    MemoryGuardActed,
    RedisMoved,
    RequestFinished,
    Retried,
    UpstreamFinished,
)
from promptrelay.telemetry.histogram import (
    LatencyHistogram,
    upper_edge,
)
from promptrelay.telemetry.prices import PriceFn, chain_prices

__all__ = ["RequestStats"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BATCH = 128  # events held before folding: amortises the fold, and few enough that the
# held events do not push the GC's young generation (700 objects) into a collection
_MAX_MODELS = 64  # model names are client input: beyond this many, hits are valued at once
_MAX_NAMES = 64  # distinct models / templates counted by name; the rest count as OTHER
OTHER = "(other)"
RECENT = 50  # the last requests kept for the dashboard
_RARE = (
    UpstreamFinished,
    Retried,
    Coalesced,
    BreakerMoved,
    RedisMoved,
    BatchFlushed,
    MemoryGuardActed,
)


def _status_class(status: int) -> str:
    return _CLASSES[status // 100 - 1] if 100 <= status < 600 else "other"


class RequestStats:
    """Listener: `subscribe()` it to the EventBus, call `mark()` once per sampling period,
    read `snapshot()`.

    Per request only all-time counts are touched: one latency histogram per (route,
    status, cache) combination and one of promptrelay's added time. Windows ("the last
    minute") are differences against the marks the sampler leaves, so their edges move
    in steps of one sampling period. `error_window` is the window of the error rate and
    of the recent added time the alert rules read; a request is an error when its
    status is >= 500.
    """

    def __init__(
        self,
        *,
        error_window: float = 60.0,
        price: PriceFn | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._price = chain_prices(price)
        self.error_window = error_window
        self.started = clock()
        self.series: dict[tuple[str, int, str], LatencyHistogram] = {}  # route, status, cache
        self.requests = 0
        self.errors = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.added = LatencyHistogram()
        self.stream_ttfb = LatencyHistogram()
        self._finished: list[RequestFinished] = []  # not folded in yet
        self.recent: deque[RequestFinished] = deque(maxlen=RECENT)  # newest last
        self.by_model: Counter[str] = Counter()  # requests by model ("": none named)
        self.by_template: Counter[str] = Counter()  # requests by template ("": none)
        self._lookups: list[CacheLookup] = []
        # (time, requests, errors) and (time, added counts, stream TTFB counts) at each
        # mark, oldest first
        empty = [0] * len(self.added.counts)
        self._rate_marks: deque[tuple[float, int, int]] = deque([(self.started, 0, 0)])
        self._latency_marks: deque[tuple[float, list[int], list[int]]] = deque(
            [(self.started, empty, empty)]
        )
        # cache
        self.hits = 0
        self.misses = 0
        self.saved_seconds = 0.0
        self.saved_tokens = 0
        self.saved_by_model: dict[str, list[int]] = {}  # model -> [input, output, hits]
        self._folded = [0.0, 0]  # dollars, unpriced hits of models beyond _MAX_MODELS
        self.coalesced = 0
        # upstream
        self.upstream = LatencyHistogram()
        self.upstream_counts: dict[str, int] = {}  # by status, "failed": no answer
        self.upstream_attempts = 0
        self.retries = 0
        # breaker, redis, batching, memory guard
        self.breaker_moves: deque[tuple[float, str, str, str]] = deque(maxlen=50)
        self.breaker_counts: dict[str, int] = {}  # transitions by new state
        self.redis_moves = 0
        self.redis_state = ""
        self.batches = 0
        self.batched_items = 0
        self.batch_wait = LatencyHistogram()
        self.guard_actions: dict[str, int] = {}
        self.guard_freed_bytes = 0
        self.guard_collect_seconds = 0.0

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(self.finished, RequestFinished)
        bus.subscribe(self.looked_up, CacheLookup)
        bus.subscribe(self.rare, *_RARE)

    def __call__(self, event: Event) -> None:
        """Any event (what `subscribe` wires by type)."""
        if type(event) is RequestFinished:
            self.finished(event)
        elif type(event) is CacheLookup:
            self.looked_up(event)
        else:
            self.rare(event)

    def finished(self, event: RequestFinished) -> None:
        pending = self._finished
        pending.append(event)
        if len(pending) >= _BATCH:
            self._fold_finished()

    def looked_up(self, event: CacheLookup) -> None:
        pending = self._lookups
        pending.append(event)
        if len(pending) >= _BATCH:
            self._fold_lookups()

    def rare(self, event: Event) -> None:
        """Events that come seldom enough to be counted at once."""
        if type(event) is UpstreamFinished:
            self.upstream.record(event.seconds)
            name = str(event.status) if event.status is not None else "failed"
            self.upstream_counts[name] = self.upstream_counts.get(name, 0) + 1
            self.upstream_attempts += event.attempts
        elif type(event) is Retried:
            self.retries += 1
        elif type(event) is Coalesced:
            self.coalesced += 1
        elif type(event) is BreakerMoved:
            self.breaker_moves.append((self._clock(), event.old, event.new, event.reason))
            self.breaker_counts[event.new] = self.breaker_counts.get(event.new, 0) + 1
        elif type(event) is RedisMoved:
            self.redis_moves += 1
            self.redis_state = event.state
        elif type(event) is BatchFlushed:
            self.batches += 1
            self.batched_items += event.size
            self.batch_wait.record(event.waited_ms / 1000)
        elif type(event) is MemoryGuardActed:
            self._guard(event)

    def drain(self) -> None:
        """Fold the pending events into the counts (readers call this first)."""
        if self._finished:
            self._fold_finished()
        if self._lookups:
            self._fold_lookups()

    def _fold_finished(self) -> None:
        events, self._finished = self._finished, []
        (
            routes, statuses, caches, seconds, ttfbs, upstream, sent, received, streams,
            models, templates,
        ) = zip(*events, strict=True)  # fmt: skip
        keys = list(zip(routes, statuses, caches, strict=True))
        distinct = set(keys)
        for key in distinct:
            # Each key's column picked out in C (a batch holds a few distinct keys).
            group = list(
                seconds if len(distinct) == 1 else compress(seconds, map(key.__eq__, keys))
            )
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = LatencyHistogram()
            series.record_many(group)
            if key[1] >= 500:
                self.errors += len(group)
        self.requests += len(events)
        self.request_bytes += sum(sent)
        self.response_bytes += sum(received)
        self.added.record_many(list(map(sub, ttfbs, upstream)))  # below 0 counts as 0
        if any(streams):
            self.stream_ttfb.record_many(list(compress(ttfbs, streams)))
        self.recent.extend(events[-RECENT:])
        _count(self.by_model, models)
        _count(self.by_template, templates)

    def _fold_lookups(self) -> None:
        events, self._lookups = self._lookups, []
        hit, _, saved_ms, saved_tokens, models, inputs, outputs = zip(*events, strict=True)
        hits = sum(hit)
        self.hits += hits
        self.misses += len(events) - hits
        self.saved_seconds += sum(saved_ms) / 1000  # a miss saves 0 of everything
        self.saved_tokens += sum(saved_tokens)
        by_model = Counter(compress(models, hit))
        if len(by_model) == 1:  # the usual batch: one model's hits
            ((model, count),) = by_model.items()
            self._saved(model, sum(inputs), sum(outputs), count)
        elif by_model:
            for model, input_tokens, output_tokens, was_hit in zip(
                models, inputs, outputs, hit, strict=True
            ):
                if was_hit:
                    self._saved(model, input_tokens, output_tokens, 1)

    def _saved(self, model: str, input_tokens: int, output_tokens: int, hits: int) -> None:
        tokens = self.saved_by_model.get(model)
        if tokens is None and len(self.saved_by_model) >= _MAX_MODELS:
            dollars, unpriced = self._value(model, input_tokens, output_tokens, hits)
            self._folded[0] += dollars
            self._folded[1] += unpriced
            return
        if tokens is None:
            tokens = self.saved_by_model[model] = [0, 0, 0]
        tokens[0] += input_tokens
        tokens[1] += output_tokens
        tokens[2] += hits

    def saved_dollars(self) -> tuple[float, int]:
        """(dollars saved by hits on priced models, hits on models without a price)."""
        self.drain()
        dollars, unpriced = self._folded[0], int(self._folded[1])
        for model, (input_tokens, output_tokens, hits) in list(self.saved_by_model.items()):
            more_dollars, more_unpriced = self._value(model, input_tokens, output_tokens, hits)
            dollars += more_dollars
            unpriced += more_unpriced
        return dollars, unpriced

    def _value(
        self, model: str, input_tokens: int, output_tokens: int, hits: int
    ) -> tuple[float, int]:
        price = self._price(model) if model else None
        if price is None or not (input_tokens or output_tokens):
            return 0.0, hits
        return (input_tokens * price[0] + output_tokens * price[1]) / 1e6, 0

    def overall(self) -> LatencyHistogram:
        """All routes together (merged when asked, not recorded twice)."""
        self.drain()
        merged = LatencyHistogram()
        for histogram in list(self.series.values()):
            merged.add(histogram)
        return merged

    def _guard(self, event: MemoryGuardActed) -> None:
        self.guard_actions[event.action] = self.guard_actions.get(event.action, 0) + 1
        self.guard_freed_bytes += event.freed_bytes
        self.guard_collect_seconds += event.seconds

    # -- reading ---------------------------------------------------------------------

    # -- marks and windows ------------------------------------------------------------

    def mark(self, now: float | None = None) -> None:
        """Leave a mark (the sampler does, once a period); old marks are dropped."""
        self.drain()
        now = self._clock() if now is None else now
        self._rate_marks.append((now, self.requests, self.errors))
        self._latency_marks.append((now, list(self.added.counts), list(self.stream_ttfb.counts)))
        _prune(self._rate_marks, now - max(300.0, self.error_window))
        _prune(self._latency_marks, now - self.error_window)

    def error_rate(self) -> tuple[float, int, int]:
        """(rate, requests, errors) since the newest mark at least `error_window` old."""
        self.drain()
        _, requests, errors = _base(self._rate_marks, self._clock() - self.error_window)
        requests, errors = self.requests - requests, self.errors - errors
        return (errors / requests if requests else 0.0), requests, errors

    def rate(self, last: float) -> float:
        """Requests per second over about the last `last` seconds."""
        self.drain()
        now = self._clock()
        at, requests, _ = _base(self._rate_marks, now - last)
        return (self.requests - requests) / (now - at) if now > at else 0.0

    def recent_added(self) -> LatencyHistogram:
        """promptrelay's added time over about the last `error_window` seconds."""
        return self._recent(self.added, 1)

    def recent_stream_ttfb(self) -> LatencyHistogram:
        """Streams' time to first byte over about the last `error_window` seconds."""
        return self._recent(self.stream_ttfb, 2)

    def _recent(self, histogram: LatencyHistogram, position: int) -> LatencyHistogram:
        self.drain()
        mark = _base(self._latency_marks, self._clock() - self.error_window)
        before_counts: list[int] = mark[position]  # type: ignore[assignment]  # a counts list
        recent = LatencyHistogram()
        for index, (now, before) in enumerate(zip(histogram.counts, before_counts, strict=True)):
            if now > before:
                recent.counts[index] = now - before
                recent.count += now - before
                recent.total += (now - before) * upper_edge(index)  # mean within ~5%
                recent.max = upper_edge(index)
        return recent

    # -- views ------------------------------------------------------------------------

    def _merged(self, position: int) -> dict[str, LatencyHistogram]:
        self.drain()
        merged: dict[str, LatencyHistogram] = {}
        for key, histogram in list(self.series.items()):
            name = str(key[position])
            if name:
                merged.setdefault(name, LatencyHistogram()).add(histogram)
        return merged

    def by_route(self) -> dict[str, LatencyHistogram]:
        return self._merged(0)

    def by_cache(self) -> dict[str, LatencyHistogram]:
        return self._merged(2)

    def request_counts(self) -> dict[tuple[str, int, str], int]:
        self.drain()
        return {key: histogram.count for key, histogram in list(self.series.items())}

    def last_requests(self) -> list[dict[str, Any]]:
        """The last RECENT requests, newest first: route, model, template, status, cache
        result, seconds (what the dashboard lists; the events carry no prompt text)."""
        self.drain()
        return [
            {
                "route": event.route,
                "model": event.model,
                "template": event.template,
                "status": event.status,
                "cache": event.cache,
                "ms": round(event.seconds * 1000, 2),
                "stream": event.stream,
            }
            for event in reversed(self.recent)
        ]

    def counts_by(self) -> dict[str, dict[str, int]]:
        """Requests by model and by template, largest first (unnamed ones left out)."""
        self.drain()
        return {
            name: {key: count for key, count in counts.most_common() if key}
            for name, counts in (("model", self.by_model), ("template", self.by_template))
        }

    def breaker_opens(self, within: float) -> int:
        """How often the breaker opened in the last `within` seconds (flapping)."""
        since = self._clock() - within
        return sum(1 for at, _, new, _ in self.breaker_moves if new == "open" and at >= since)

    def statuses(self) -> dict[str, int]:
        """Requests by status class; 499 (the client left) on its own."""
        found: dict[str, int] = {}
        for (_, status, _), count in self.request_counts().items():
            name = _status_class(status) if status != 499 else "client_gone"
            found[name] = found.get(name, 0) + count
        return found

    def snapshot(self) -> dict[str, Any]:
        self.drain()
        rate, recent, recent_errors = self.error_rate()
        lookups = self.hits + self.misses
        dollars, unpriced = self.saved_dollars()
        return {
            "total": self.requests,
            "errors": self.errors,
            "statuses": self.statuses(),
            "throughput": {
                "last_1m_per_s": round(self.rate(60.0), 3),
                "last_5m_per_s": round(self.rate(300.0), 3),
            },
            "error_rate": {
                "window_s": self.error_window,
                "requests": recent,
                "errors": recent_errors,
                "rate": round(rate, 4),
            },
            "latency": self.overall().summary(),
            "by_route": {name: h.summary() for name, h in sorted(self.by_route().items())},
            "by_cache": {name: h.summary() for name, h in sorted(self.by_cache().items())},
            "added_latency": self.added.summary(),
            "recent_added_latency": self.recent_added().summary(),
            "recent_stream_ttfb": self.recent_stream_ttfb().summary(),
            "bytes": {"request": self.request_bytes, "response": self.response_bytes},
            "cache": {
                "hits": self.hits,
                "misses": self.misses,
                "hit_ratio": round(self.hits / lookups, 4) if lookups else 0.0,
                "coalesced": self.coalesced,
                "saved": {
                    "upstream_seconds": round(self.saved_seconds, 3),
                    "tokens": self.saved_tokens,
                    "dollars": round(dollars, 6),
                    "unpriced_hits": unpriced,
                },
            },
            "upstream": {
                "latency": self.upstream.summary(),
                "statuses": dict(self.upstream_counts),
                "attempts": self.upstream_attempts,
                "retries": self.retries,
            },
        }


def _count(counts: Counter[str], names: tuple[str, ...]) -> None:
    """Count a batch's names in C; names are client input, so past _MAX_NAMES distinct
    ones the smallest fold into OTHER (a dictionary never grows without bound)."""
    distinct = set(names)
    if len(distinct) == 1:  # the usual batch: one model, or no template
        counts[names[0]] += len(names)
    else:
        counts.update(names)
    if len(counts) > _MAX_NAMES:
        kept = dict(counts.most_common(_MAX_NAMES - 1))
        other = counts.total() - sum(kept.values())
        counts.clear()
        counts.update(kept)
        counts[OTHER] += other


_Mark = TypeVar("_Mark", tuple[float, int, int], tuple[float, list[int], list[int]])


def _prune(marks: deque[_Mark], horizon: float) -> None:
    """Drop marks older than needed, keeping the newest one at or before `horizon`."""
    while len(marks) > 1 and marks[1][0] <= horizon:
        marks.popleft()


def _base(marks: deque[_Mark], since: float) -> _Mark:
    """The newest mark at or before `since` (else the oldest: the window is still young)."""
    for mark in reversed(marks):
        if mark[0] <= since:
            return mark
    return marks[0]
