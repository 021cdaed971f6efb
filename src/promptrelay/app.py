"""build_app(settings): the ASGI application, its components and their lifespan.

The outer app is a plain ASGI callable. It sends the hot routes straight to `HotRoutes`
and everything else to the FastAPI management app. It owns the ASGI lifespan: startup
builds the `Runtime` (pooled upstream client, the pipeline, the faces and the management
app, each router handed the components it uses), shutdown closes it. No module-level app
or client exists; two apps can live side by side in one process.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter

from promptrelay.api.access import Access
from promptrelay.api.admin import build_admin_router
from promptrelay.api.asgi import Receive, Scope, Send, send_error
from promptrelay.api.batch import build_batch_router
from promptrelay.api.dashboard import build_dashboard_router
from promptrelay.api.hot import HotRoutes
from promptrelay.api.keys import build_keys_router
from promptrelay.api.management import build_management_app
from promptrelay.api.openai import OpenAIFace
from promptrelay.api.providers import build_providers_router
from promptrelay.api.telemetry_routes import build_telemetry_router
from promptrelay.api.templates import build_templates_router
from promptrelay.cache.tiered import TieredCache
from promptrelay.core.auth import KeyMode, KeyResolver
from promptrelay.core.batch_jobs import BatchJobs
from promptrelay.core.batch_store import job_store
from promptrelay.core.batcher import MicroBatcher, WindowPolicy
from promptrelay.core.events import (
    BatchFlushed,
    BreakerMoved,
    CacheLookup,
    EventBus,
    RedisMoved,
)
from promptrelay.core.gateway import Gateway, Reply
from promptrelay.core.keywatch import KeysFileWatcher
from promptrelay.core.pipeline import Pipeline
from promptrelay.core.providers import Providers
from promptrelay.core.quotas import Counters, MemoryCounters, Quotas, RedisCounters
from promptrelay.core.resilient import ResilientUpstream
from promptrelay.core.responses_store import ResponseStore
from promptrelay.core.thinking_store import ThinkingStore
from promptrelay.errors import GatewayError
from promptrelay.resilience.breaker import BreakerMachine, BreakerTransition
from promptrelay.resilience.governor import Governor
from promptrelay.resilience.lease import ProbeLease
from promptrelay.resilience.peers import RedisPeers
from promptrelay.resilience.redis_state import RedisBreakerState
from promptrelay.resilience.retry import RetryPolicy
from promptrelay.resilience.shared import CircuitBreaker
from promptrelay.settings import Settings
from promptrelay.telemetry.batches import BatchStats
from promptrelay.telemetry.prices import chain_prices
from promptrelay.telemetry.recommend import governor_advice
from promptrelay.telemetry.savings import CacheSavings, saved_by_cache
from promptrelay.telemetry.service import Sources, Telemetry
from promptrelay.templates.render import Renderer
from promptrelay.templates.sandbox import Limits
from promptrelay.templates.service import TemplateService
from promptrelay.templates.store import open_store
from promptrelay.upstream.client import UpstreamClient
from promptrelay.upstream.offline import HOW_TO_GO_LIVE, OfflineProvider

__all__ = ["PromptRelay", "Runtime", "build_app"]

log = logging.getLogger("promptrelay")

_PROBE_EVERY = 10.0  # seconds between upstream reachability probes for /api/health


class _NotStarted(GatewayError):
    status = 503
    type = "api_error"


_NOT_STARTED = _NotStarted("promptrelay has not started (ASGI lifespan not run)")


class Runtime:
    """Every long-lived component, created inside the event loop at startup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events = EventBus()
        self.keys = KeyResolver(settings)
        self.cache = TieredCache.from_settings(settings, on_state=self._redis_state)
        self.upstream = UpstreamClient(settings)
        self.breaker = self._build_breaker(settings)
        self.providers = Providers.from_settings(settings, self.cache)
        self.quotas = self._build_quotas(settings)
        self.keys_watcher = (
            KeysFileWatcher(self.keys, settings.keys_file) if settings.keys_file else None
        )
        limits = Limits(settings.template_max_steps, settings.template_max_output_bytes)
        self.templates = TemplateService(
            open_store(settings.database_url), self.cache, Renderer(limits)
        )
        self.pipeline = self._build_pipeline(settings)
        self.hot = HotRoutes(settings, self.pipeline, self.keys, self.events)
        self.openai = self._openai_face(settings)
        self.batch_stats = BatchStats()
        self.events.subscribe(self.batch_stats, BatchFlushed)
        window = WindowPolicy(settings.batch_max_size, settings.batch_window_ms / 1000)
        self.batcher: MicroBatcher[Reply] = MicroBatcher(
            window, budget=settings.batch_max_concurrency, events=self.events
        )
        self.batch_jobs = BatchJobs(self.pipeline, job_store(settings, self.cache.redis))
        self._probe: tuple[float, dict[str, Any]] | None = None
        self.redis_state = "disabled" if self.cache.redis is None else "starting"
        self.telemetry: Telemetry | None = None
        self._savings: CacheSavings | None = None
        if settings.telemetry_enabled:
            self.telemetry = Telemetry(
                settings, self.events, self._telemetry_sources(), price=self._price
            )
        else:  # the cache's own savings counter; with telemetry on, its stats count them
            self._savings = CacheSavings()
            self.events.subscribe(self._savings, CacheLookup)
        self.management = build_management_app(self._routers(), health=self.health)

    def _build_pipeline(self, settings: Settings) -> Pipeline:
        policy = RetryPolicy(
            retries=settings.upstream_retries,
            max_wait=settings.retry_max_wait,
            deadline=settings.upstream_timeout,
        )
        self.governor = self._build_governor(settings)
        resilient = ResilientUpstream(
            self.upstream,
            self.breaker,
            policy,
            budget=settings.upstream_timeout,
            events=self.events,
            governor=self.governor,
        )
        return Pipeline(
            Gateway(resilient, OfflineProvider(), self.cache, self.events, quotas=self.quotas),
            self.providers,
            self.templates,
            default_version=settings.anthropic_version,
            default_max_tokens=settings.default_max_tokens,
            prompt_cache_auto=settings.prompt_cache_auto,
        )

    def _routers(self) -> list[APIRouter]:
        settings = self.settings
        access = Access(settings, self.keys)
        return [
            build_admin_router(
                access,
                self.cache,
                self.pipeline,
                self.keys,
                redis_state=lambda: self.redis_state,
                savings=self.savings,
            ),
            build_batch_router(
                settings,
                self.keys,
                self.pipeline,
                batcher=self.batcher,
                jobs=self.batch_jobs,
                stats=self.batch_stats,
            ),
            build_templates_router(access, self.templates, self.pipeline, self.keys),
            build_providers_router(access, self.providers),
            build_telemetry_router(
                access,
                self.telemetry,
                metrics_token=settings.metrics_token,
                performance_body=self.performance,
                governor=lambda: self.governor.snapshot() if self.governor else None,
            ),
            build_keys_router(access, self.keys, self.quotas),
            build_dashboard_router(
                access.admin,
                keyed=lambda: settings.admin_api_key is not None,
                performance=self.performance,
                telemetry=lambda: self.telemetry,
                refresh=lambda: settings.dashboard_refresh,
                mode=lambda: self.mode,
            ),
        ]

    async def health(self) -> dict[str, Any]:
        """GET /api/health, below its status and version."""
        return {
            "mode": self.mode,
            "served_by_key_mode": dict(self.pipeline.served_by_mode),
            "upstream": await self.upstream_status(),
            "breaker": self.breaker.snapshot(),
            "redis": self.redis_state,
            "cache": {"entries": len(self.cache.memory), "bytes": self.cache.memory.bytes},
        }

    def _openai_face(self, settings: Settings) -> OpenAIFace:
        ttl = settings.responses_store_ttl
        return OpenAIFace(
            settings,
            self.hot,
            self.pipeline,
            self.keys,
            self.providers,
            ResponseStore(self.cache, ttl=ttl),
            ThinkingStore(self.cache, ttl=ttl),
        )

    def savings(self) -> dict[str, Any]:
        """What the cache saved, for /api/cache/stats: hits, misses, time, tokens."""
        if self._savings is not None:
            return self._savings.snapshot()
        assert self.telemetry is not None
        return saved_by_cache(self.telemetry.stats)

    async def performance(self, window: float) -> dict[str, Any]:
        """The /api/performance body over a history `window` (s); telemetry must be on."""
        assert self.telemetry is not None
        extra = {
            "cache": {
                "tiers": self.cache.stats(),
                "savings_total": self.savings(),
            },
            "upstream": await self.upstream_status(),
            "breaker": self.breaker.snapshot(),
            "governor": self.governor.snapshot() if self.governor is not None else None,
        }
        body = await self.telemetry.performance(window, extra)
        body["recommendations"] += governor_advice(extra["governor"])
        return body

    def _price(self, model: str) -> tuple[float, float] | None:
        """The providers file's price, for the dollars the cache saved."""
        price = self.providers.price(model)
        return None if price is None else (price.input_per_mtok, price.output_per_mtok)

    def _telemetry_sources(self) -> Sources:
        redis = self.cache.redis
        return Sources(
            pool=self.upstream.pool_stats,
            breaker=self.breaker.snapshot,
            redis_state=lambda: self.redis_state,
            in_flight=lambda: (self.hot.in_flight, self.hot.in_flight_bytes),
            cache_memory=lambda: (len(self.cache.memory), self.cache.memory.bytes),
            trim_memory=self.cache.memory.trim,
            redis=redis,
        )

    def _build_breaker(self, settings: Settings) -> CircuitBreaker:
        def moved(transition: BreakerTransition) -> None:
            log.warning(
                "circuit breaker %s -> %s (%s)",
                transition.old.value,
                transition.new.value,
                transition.reason.value,
            )
            self.events.emit(
                BreakerMoved(transition.old.value, transition.new.value, transition.reason.value)
            )

        machine = BreakerMachine(
            failure_threshold=settings.circuit_failure_threshold,
            window=settings.circuit_window,
            reset_timeout=settings.circuit_reset_timeout,
            probe_timeout=settings.circuit_probe_timeout,
            listeners=[moved],
        )
        lease = ProbeLease(settings.circuit_probe_lease)
        redis = self.cache.redis
        if redis is None:
            return CircuitBreaker(machine, lease=lease)
        upstream_id = hashlib.sha256(settings.anthropic_base_url.encode()).hexdigest()[:12]
        shared = RedisBreakerState(redis, f"promptrelay:breaker:{upstream_id}")
        # The tier bounds each call itself (and learns from it); this is only a backstop.
        return CircuitBreaker(machine, shared, lease=lease, shared_timeout=redis.budget + 0.1)

    def _build_quotas(self, settings: Settings) -> Quotas | None:
        if settings.keys_file is None:
            return None
        redis = self.cache.redis
        counters: Counters = MemoryCounters()
        if redis is not None:
            counters = RedisCounters(redis)
        return Quotas(counters, chain_prices(self._price))

    def _build_governor(self, settings: Settings) -> Governor | None:
        if not settings.governor_enabled:
            return None
        redis = self.cache.redis
        peers = None
        if redis is not None:
            peers = RedisPeers(redis)
        return Governor(
            initial_concurrency=settings.governor_initial_concurrency,
            max_queue=settings.governor_max_queue,
            max_wait=settings.governor_wait,
            peers=peers,
        )

    def _redis_state(self, state: str) -> None:
        if state != self.redis_state:
            log.warning("redis is %s", state)
            self.events.emit(RedisMoved(state))
        self.redis_state = state

    async def start(self) -> None:
        await self.cache.start()
        await self.providers.start()
        if self.settings.templates_dir:
            await self.templates.seed(self.settings.templates_dir)
        if self.telemetry is not None:
            await self.telemetry.start()
        if self.governor is not None:
            await self.governor.start()
        if self.keys_watcher is not None:
            await self.keys_watcher.start()

    @property
    def mode(self) -> str:
        """live: the gateway's key; passthrough: clients' own keys, else offline."""
        if self.settings.anthropic_api_key is not None:
            return "live"
        if self.keys.requires_client_key:
            return "offline"
        return "offline+passthrough"

    async def close(self) -> None:
        """Close everything, each step on its own: one that fails (or never started) must
        not keep the others from closing (the cache's write-behind flush comes last)."""
        steps = [self.batcher.close]
        if self.governor is not None:
            steps.append(self.governor.close)
        if self.keys_watcher is not None:
            steps.append(self.keys_watcher.close)
        if self.telemetry is not None:
            steps.append(self.telemetry.close)
        steps += [self.breaker.close, self.upstream.close, self.templates.close, self.cache.close]
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("shutdown: %s failed", step.__qualname__)

    async def upstream_status(self) -> dict[str, Any]:
        pool = self.upstream.pool_stats()
        status: dict[str, Any] = {
            "base_url": self.upstream.base_url,
            "pool": {
                "limit": pool.limit,
                "open": pool.open,
                "idle": pool.idle,
                "in_use": pool.in_use,
                "waiting": pool.waiting,
                "connections_opened": pool.connections_opened,
                "requests": pool.requests,
            },
        }
        status.update(await self._reachability())
        return status

    async def _reachability(self) -> dict[str, Any]:
        """A TCP connect to the upstream, at most every _PROBE_EVERY seconds, and only
        once the upstream is in use: an offline gateway reaches out to nobody."""
        in_use = self.mode == "live" or self.pipeline.served_by_mode[KeyMode.CLIENT.value] > 0
        if not in_use:
            return {"reachable": None, "probe": "skipped: offline, no upstream call yet"}
        now = time.monotonic()
        if self._probe is not None and now - self._probe[0] < _PROBE_EVERY:
            return self._probe[1]
        parts = urlsplit(self.upstream.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, port), timeout=1.0
            )
            writer.close()
            result: dict[str, Any] = {"reachable": True}
        except (OSError, TimeoutError) as error:
            result = {"reachable": False, "error": type(error).__name__}
        self._probe = (now, result)
        return result


class PromptRelay:
    """The ASGI application."""

    def __init__(self, settings: Settings, *, own_process: bool = False) -> None:
        self.settings = settings
        self.own_process = own_process  # the server process is ours alone: tune its GC
        self.runtime: Runtime | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.runtime is not None:
            path: str = scope["path"]
            if path == "/v1/messages":
                return await self.runtime.hot.messages(scope, receive, send)
            if path == "/api/generate":  # exact: /api/generate/batch goes to management
                return await self.runtime.hot.generate(scope, receive, send)
            if path.startswith("/v1/"):
                return await self._v1(path, scope, receive, send)
            return await self.runtime.management(scope, receive, send)
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http":
            await send_error(send, _NOT_STARTED, [])
        elif self.runtime is not None:  # a websocket: the management app refuses it
            await self.runtime.management(scope, receive, send)

    async def _v1(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The OpenAI faces, then every other /v1 route passed through."""
        assert self.runtime is not None
        if path == "/v1/chat/completions":
            return await self.runtime.openai.chat(scope, receive, send)
        if path == "/v1/responses":
            return await self.runtime.openai.responses(scope, receive, send)
        if path.startswith("/v1/responses/"):
            return await self.runtime.openai.stored_response(scope, receive, send)
        models = path == "/v1/models" or path.startswith("/v1/models/")
        if models and scope["method"] == "GET":
            return await self.runtime.openai.models(scope, receive, send)
        return await self.runtime.hot.forward(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                runtime = None
                try:
                    runtime = Runtime(self.settings)
                    await runtime.start()
                    self.runtime = runtime
                except Exception as error:  # report, don't crash the server loop
                    log.exception("startup failed")
                    if runtime is not None:
                        await runtime.close()  # what did start (pools, sweepers) stops again
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                _log_startup(self.settings, self.runtime)
                if self.own_process:
                    _freeze_startup_objects(self.settings.gc_young_threshold)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    await self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _log_startup(settings: Settings, runtime: Runtime) -> None:
    if runtime.mode == "live":
        log.info("promptrelay live: upstream %s", settings.anthropic_base_url)
    else:
        log.warning("%s", HOW_TO_GO_LIVE)
    if runtime.keys.requires_client_key:
        log.info("client keys required (%d configured)", len(settings.promptrelay_api_keys))


def _freeze_startup_objects(young_threshold: int) -> None:
    """Move everything alive after startup (modules, FastAPI's routes, pydantic's
    schemas: ~50k objects) out of the collector's sight.

    A full collection visits every tracked object; under load here it took 25-60 ms with
    those objects in it, and that pause lands on the requests in flight (it was most of
    the miss path's p99). They live as long as the process, so scanning them is waste.
    Only for a process that serves nothing else (`promptrelay serve`, `create_app`): an
    embedding program's own objects would be frozen too.

    `young_threshold` (GC_YOUNG_THRESHOLD) replaces Python's 700 allocations between
    young collections: with a thousand requests in flight, their objects outlived the
    young and middle collections, reached the oldest generation and set off full
    collections of it (docs/benchmarks.md, the tail at 1,024 concurrent).
    """
    gc.collect()
    gc.freeze()
    if young_threshold:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)


def build_app(settings: Settings, *, own_process: bool = False) -> PromptRelay:
    return PromptRelay(settings, own_process=own_process)


def create_app() -> PromptRelay:
    """Factory for `uvicorn --factory` and multi-worker runs: settings from the environment."""
    from promptrelay.settings import load_settings

    return build_app(load_settings(), own_process=True)
