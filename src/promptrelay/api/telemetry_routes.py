"""Telemetry routes: GET /api/performance, GET /api/alerts (admin), GET /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from promptrelay.api.access import Access
from promptrelay.errors import InvalidRequest, NotFound
from promptrelay.telemetry.history import parse_window
from promptrelay.telemetry.prometheus import CONTENT_TYPE_LATEST
from promptrelay.telemetry.service import Telemetry

__all__ = ["build_telemetry_router"]


def build_telemetry_router(
    access: Access,
    telemetry: Telemetry | None,
    *,
    gateway_state: Callable[[], Awaitable[dict[str, Any]]],
) -> APIRouter:
    """`gateway_state()`: what /api/performance adds to telemetry's own view (cache
    tiers and savings, upstream pool and reachability, breaker)."""
    router = APIRouter(tags=["telemetry"])

    def started() -> Telemetry:
        if telemetry is None:
            raise NotFound("telemetry is off (TELEMETRY_ENABLED=false)")
        return telemetry

    @router.get("/api/performance", summary="System and request metrics, history, advice")
    async def performance(
        window: Annotated[str, Query(description="History window: 90s, 15m, 1h, 1d")] = "1h",
    ) -> dict[str, Any]:
        try:
            seconds = parse_window(window)
        except ValueError as error:
            raise InvalidRequest(str(error)) from None
        found = started()
        return await found.performance(seconds, await gateway_state())

    @router.get(
        "/api/alerts",
        summary="Active and recent alerts",
        dependencies=[Depends(access.admin)],
    )
    async def alerts() -> dict[str, Any]:
        return started().alerts_view()

    @router.get("/metrics", summary="Prometheus exposition", response_class=Response)
    async def metrics() -> Response:
        found = started()
        body = await found.prometheus.render(found.stats)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
