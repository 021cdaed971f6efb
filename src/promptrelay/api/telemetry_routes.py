"""Telemetry routes: GET /api/performance, GET /api/alerts (admin), GET /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from promptrelay.api.admin import admin_guard
from promptrelay.errors import InvalidRequest, NotFound
from promptrelay.telemetry.history import parse_window
from promptrelay.telemetry.prometheus import CONTENT_TYPE_LATEST
from promptrelay.telemetry.recommend import governor_advice

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptrelay.app import Runtime
    from promptrelay.telemetry.service import Telemetry

__all__ = ["build_telemetry_router"]


def build_telemetry_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(tags=["telemetry"])

    def telemetry() -> Telemetry:
        found = runtime().telemetry
        if found is None:
            raise NotFound("telemetry is off (TELEMETRY_ENABLED=false)")
        return found

    @router.get("/api/performance", summary="System and request metrics, history, advice")
    async def performance(
        window: Annotated[str, Query(description="History window: 90s, 15m, 1h, 1d")] = "1h",
    ) -> dict[str, Any]:
        try:
            seconds = parse_window(window)
        except ValueError as error:
            raise InvalidRequest(str(error)) from None
        rt = runtime()
        extra = {
            "cache": {
                "tiers": rt.cache.stats(),
                "savings_total": rt.savings(),
            },
            "upstream": await rt.upstream_status(),
            "breaker": rt.breaker.snapshot(),
            "governor": rt.governor.snapshot() if rt.governor is not None else None,
        }
        body = await telemetry().performance(seconds, extra)
        body["recommendations"] += governor_advice(extra["governor"])
        return body

    @router.get(
        "/api/alerts",
        summary="Active and recent alerts",
        dependencies=[Depends(admin_guard(runtime))],
    )
    async def alerts() -> dict[str, Any]:
        return telemetry().alerts_view()

    @router.get("/metrics", summary="Prometheus exposition", response_class=Response)
    async def metrics() -> Response:
        found = telemetry()
        governor = runtime().governor
        if governor is not None:
            found.prometheus.governed(governor.snapshot())
        body = await found.prometheus.render(found.stats)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
