"""The telemetry service: listeners on the bus, the sampler task, and the readers.

    EventBus --> RequestStats, PrometheusExporter          (per event, O(1))
    sampler (every TELEMETRY_INTERVAL s):
        SystemProbe.sample() + stats + component gauges -> Snapshot
        -> MemoryGuard.check(pressure)
        -> Prometheus gauges, History rings, Redis snapshot (with Redis, CACHE_TTL_METRICS)
        -> alert rules -> AlertManager.step -> AlertDelivery (log, webhook; once across
           processes through Redis SET NX)
    Redis (snapshots, the process registry, alert claims) only through the tier's
    health-gated `run`: while the tier is down nothing is sent, each falls back at once
    (no registry beyond this process, every alert delivered here).
    readers: performance(window) for /api/performance, alerts() for /api/alerts,
             prometheus.render() for /metrics

Built by the app's lifespan from Settings and a `Sources` of callables into the other
components, so nothing here imports the app and business code never imports this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from redis.asyncio import Redis, RedisCluster

from promptrelay.core.events import EventBus, PromptCacheUsed
from promptrelay.errors import RedisUnavailable
from promptrelay.settings import Settings
from promptrelay.telemetry.alerts import AlertManager, Thresholds, evaluate
from promptrelay.telemetry.delivery import AlertDelivery
from promptrelay.telemetry.guard import GuardPolicy, MemoryGuard
from promptrelay.telemetry.history import History
from promptrelay.telemetry.prices import PriceFn
from promptrelay.telemetry.prometheus import PrometheusExporter
from promptrelay.telemetry.recommend import recommend
from promptrelay.telemetry.savings import PromptCacheSavings
from promptrelay.telemetry.snapshot import Snapshot, Tuning
from promptrelay.telemetry.stats import RequestStats
from promptrelay.telemetry.system import GcWatch, LoopLagProbe, SystemProbe, SystemSample
from promptrelay.upstream.client import PoolStats

if TYPE_CHECKING:
    from promptrelay.cache.redis import RedisTier

__all__ = ["Sources", "Telemetry"]

log = logging.getLogger("promptrelay.telemetry")

_T = TypeVar("_T")
# Sorted set of process ids by the wall time of their last snapshot: the registry is
# read with one range and one MGET, never a SCAN over the whole (shared) keyspace. One
# hash tag puts the set and every snapshot in one slot, so on a Redis Cluster that MGET
# never crosses slots.
_SNAPSHOT_PREFIX = "{promptrelay:telemetry}:process:"
_REGISTRY = "{promptrelay:telemetry}:processes"
_Client = Redis | RedisCluster
_REGISTRY_MAX = 100


@dataclass(frozen=True, slots=True)
class Sources:
    """Read-only views into the other components, supplied by the app."""

    pool: Callable[[], PoolStats]
    breaker: Callable[[], dict[str, object]]
    redis_state: Callable[[], str]
    in_flight: Callable[[], tuple[int, int]]  # (requests, request body bytes)
    cache_memory: Callable[[], tuple[int, int]]  # (entries, bytes)
    trim_memory: Callable[[float], int]
    redis: RedisTier | None


class Telemetry:
    def __init__(
        self,
        settings: Settings,
        events: EventBus,
        sources: Sources,
        *,
        price: PriceFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.interval = settings.telemetry_interval
        self._clock, self._wall = clock, wall
        self.stats = RequestStats(error_window=settings.alert_error_window, price=price)
        self.prometheus = PrometheusExporter(settings.prometheus_multiproc_dir)
        self.stats.subscribe(events)  # the one per-request listener; Prometheus syncs from it
        self.prompt_cache = PromptCacheSavings(price)  # Anthropic's cache, apart from ours
        events.subscribe(self.prompt_cache, PromptCacheUsed)
        self.history = History()
        self.thresholds = _thresholds(settings)
        self.tuning = _tuning(settings)
        self.alerts = AlertManager(
            cooldown=settings.alert_cooldown,
            escalate_after=settings.alert_escalate_after,
            clock=clock,
        )
        self.delivery = AlertDelivery(
            settings.alert_webhook_url,
            cooldown=settings.alert_cooldown,
            claim=self._claim if settings.redis_enabled else None,
        )
        policy = GuardPolicy(
            threshold=settings.gc_threshold,
            critical=settings.gc_critical_threshold,
            min_interval=settings.gc_min_interval,
            clock=clock,
        )
        self.guard = MemoryGuard(policy, sources.trim_memory, events)
        self.lag = LoopLagProbe(min(0.1, self.interval / 2))
        self.gc = GcWatch()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last: tuple[SystemSample, Snapshot] | None = None
        self.samples = 0
        self._probe: SystemProbe | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._process_id = f"{socket.gethostname()}:{os.getpid()}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.gc.install()
        self._probe = SystemProbe(self.settings.memory_limit_bytes, self.lag, self.gc)
        self.lag.start()
        self._task = self.loop.create_task(self._run(), name="telemetry-sampler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.lag.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.delivery.close()
        self.gc.remove()
        self.guard.close()
        self.prometheus.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:  # the sampler must outlive a bug in one period
                log.exception("telemetry sampling failed")

    # -- one period ------------------------------------------------------------------

    async def tick(self) -> Snapshot:
        assert self._probe is not None, "start() first"
        system = self._probe.sample()
        self.stats.mark()
        snapshot = self.snapshot(system)
        self.guard.check(system.memory_fraction)
        self.prometheus.sampled(system, self._gauges(snapshot))
        self.prometheus.sync(self.stats)
        self.history.add(self._wall(), self._point(system, snapshot))
        for notice in self.alerts.step(evaluate(snapshot, self.thresholds)):
            self.prometheus.alerted(notice.key, notice.kind)
            self.delivery.submit(notice)
        self.last = (system, snapshot)
        self.samples += 1
        if self.settings.redis_enabled:
            self._spawn(self._publish_snapshot(system, snapshot))
        return snapshot

    def snapshot(self, system: SystemSample) -> Snapshot:
        stats = self.stats
        pool = self.sources.pool()
        _, recent, errors = stats.error_rate()
        miss = stats.by_cache().get("MISS")
        entries_bytes = self.sources.cache_memory()
        return Snapshot(
            at=self._wall(),
            rss_bytes=system.rss_bytes,
            memory_limit_bytes=system.memory_limit_bytes,
            cpu_percent=system.cpu_percent,
            loop_lag_ms=system.loop_lag_ms,
            open_fds=system.open_fds,
            requests_window=recent,
            errors_window=errors,
            error_window_s=stats.error_window,
            added_p95_ms=stats.recent_added().quantile(0.95) * 1000,
            stream_ttfb_p95_ms=stats.recent_stream_ttfb().quantile(0.95) * 1000,
            miss_p50_ms=miss.quantile(0.5) * 1000 if miss is not None else 0.0,
            hits=stats.hits,
            misses=stats.misses,
            pool_limit=pool.limit,
            pool_in_use=pool.in_use,
            pool_waiting=pool.waiting,
            pool_waits_total=pool.waiting,
            breaker_state=str(self.sources.breaker().get("state", "closed")),
            breaker_opens_recent=stats.breaker_opens(600.0),
            redis_state=self.sources.redis_state(),
            memory_cache_bytes=entries_bytes[1],
            aggressive_gc=self.guard.policy.aggressive,
        )

    def _gauges(self, snapshot: Snapshot) -> dict[str, float]:
        in_flight, in_flight_bytes = self.sources.in_flight()
        entries, cache_bytes = self.sources.cache_memory()
        return {
            "in_flight": in_flight,
            "in_flight_bytes": in_flight_bytes,
            "cache_entries": entries,
            "cache_bytes": cache_bytes,
            "pool_in_use": snapshot.pool_in_use,
            "pool_waiting": snapshot.pool_waiting,
            "breaker_open": 1 if snapshot.breaker_state == "open" else 0,
            "redis_up": 1 if snapshot.redis_state == "up" else 0,
        }

    def _point(self, system: SystemSample, snapshot: Snapshot) -> tuple[float, ...]:
        return (
            float(system.rss_bytes),
            round(system.memory_fraction, 4),
            round(system.cpu_percent, 1),
            round(system.loop_lag_ms, 2),
            round(self.stats.rate(60.0), 3),
            round(snapshot.error_rate, 4),
            round(self.stats.recent_added().quantile(0.95) * 1000, 3),
            round(snapshot.hit_ratio, 4),
            float(self.sources.in_flight()[0]),
        )

    # -- Redis -----------------------------------------------------------------------

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _redis_call(self, call: Callable[[_Client], Awaitable[_T]]) -> _T | None:
        """One call through the tier's health; None when Redis is absent, down or failing."""
        tier = self.sources.redis
        if tier is None:
            return None
        try:
            return await tier.run(call)
        except RedisUnavailable as error:  # a telemetry write is never worth an error
            log.debug("telemetry redis call skipped: %s", error)
            return None

    async def _claim(self, key: str, seconds: float) -> bool:
        """SET NX EX: True for the first process; True as well when Redis is unusable."""

        async def set_nx(client: _Client) -> bool:
            return bool(await client.set(key, self._process_id, nx=True, ex=max(1, round(seconds))))

        won = await self._redis_call(set_nx)
        return True if won is None else won

    async def _publish_snapshot(self, system: SystemSample, snapshot: Snapshot) -> None:
        payload = orjson.dumps(
            {
                "process": self._process_id,
                "at": snapshot.at,
                "system": system.as_dict(),
                "requests": {
                    "total": self.stats.requests,
                    "errors": self.stats.errors,
                    "error_rate": round(snapshot.error_rate, 4),
                    "hit_ratio": round(snapshot.hit_ratio, 4),
                },
                "alerts": [a["key"] for a in self.alerts.active()],
            }
        )
        ttl = self.settings.cache_ttl_metrics
        at = snapshot.at

        async def write(client: _Client) -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.set(_SNAPSHOT_PREFIX + self._process_id, payload, ex=ttl)
            pipe.zadd(_REGISTRY, {self._process_id: at})
            pipe.zremrangebyscore(_REGISTRY, "-inf", at - ttl)  # processes gone quiet
            pipe.expire(_REGISTRY, ttl)
            return await pipe.execute()

        await self._redis_call(write)

    async def processes(self) -> list[dict[str, Any]]:
        """Every process's latest snapshot in Redis (this one included), newest first."""
        since = self._wall() - self.settings.cache_ttl_metrics

        async def read(client: _Client) -> list[Any]:
            ids = await client.zrevrangebyscore(
                _REGISTRY, "+inf", since, start=0, num=_REGISTRY_MAX
            )
            keys = [_SNAPSHOT_PREFIX + _text(member) for member in ids]
            return list(await client.mget(keys)) if keys else []

        values = await self._redis_call(read) or []
        found = [orjson.loads(v) for v in values if v]
        return sorted(found, key=lambda item: -float(item.get("at", 0)))

    # -- readers ---------------------------------------------------------------------

    async def performance(self, window: float, extra: dict[str, Any]) -> dict[str, Any]:
        """The /api/performance body. `extra` carries the components' own stats."""
        system, snapshot = self.last or (None, None)
        requests = self.stats.snapshot()
        cache = requests.pop("cache")
        upstream = requests.pop("upstream")
        in_flight, in_flight_bytes = self.sources.in_flight()
        requests["in_flight"] = {"requests": in_flight, "request_bytes": in_flight_bytes}
        body: dict[str, Any] = {
            "process": self._process_id,
            "uptime_s": round(self._clock() - self.stats.started, 1),
            "sampling_interval_s": self.interval,
            "samples": self.samples,
            "system": system.as_dict() if system is not None else None,
            "memory_guard": {
                "threshold": self.guard.policy.threshold,
                "critical": self.guard.policy.critical,
                "aggressive": self.guard.policy.aggressive,
                "actions": dict(self.stats.guard_actions),
                "freed_bytes": self.stats.guard_freed_bytes,
                "collect_seconds": round(self.stats.guard_collect_seconds, 4),
            },
            "requests": requests,
            "cache": {
                **cache,
                **extra.get("cache", {}),
                "anthropic_prompt_cache": self.prompt_cache.snapshot(),
            },
            "upstream": {**upstream, **extra.get("upstream", {})},
            "breaker": {
                **extra.get("breaker", {}),
                "recent_transitions": [
                    {"at_monotonic": round(at, 3), "from": old, "to": new, "reason": reason}
                    for at, old, new, reason in list(self.stats.breaker_moves)[-10:]
                ],
            },
            "batching": {
                "batches": self.stats.batches,
                "items": self.stats.batched_items,
                "wait": self.stats.batch_wait.summary(),
            },
            "redis": {"state": self.sources.redis_state(), "transitions": self.stats.redis_moves},
            "governor": extra.get("governor"),
            "history": self.history.series(window, self._wall()),
            "alerts": {"active": self.alerts.active()},
            "recommendations": recommend(snapshot, self.tuning) if snapshot else [],
        }
        if self.settings.redis_enabled:
            body["processes"] = await self.processes()
        return body

    def alerts_view(self) -> dict[str, Any]:
        return {
            "active": self.alerts.active(),
            "recent": [n.as_dict() for n in reversed(self.alerts.recent)],
            "cooldown_s": self.alerts.cooldown,
            "webhook": {
                "configured": self.delivery.webhook_url is not None,
                "sent": self.delivery.webhook_sent,
                "failed": self.delivery.webhook_failed,
            },
        }


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        memory_fraction=settings.memory_threshold,
        cpu_percent=settings.alert_cpu_percent,
        slow_seconds=settings.alert_slow_seconds,
        error_rate=settings.alert_error_rate,
        min_requests=settings.alert_min_requests,
        loop_lag_ms=settings.alert_loop_lag_ms,
    )


def _tuning(settings: Settings) -> Tuning:
    return Tuning(
        workers=settings.workers,
        cpu_count=os.cpu_count() or 1,
        max_sockets=settings.max_sockets,
        memory_cache_max_bytes=settings.memory_cache_max_bytes,
        cache_ttl_claude_response=settings.cache_ttl_claude_response,
        gc_threshold=settings.gc_threshold,
        redis_enabled=settings.redis_enabled,
    )


def _text(member: object) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)
