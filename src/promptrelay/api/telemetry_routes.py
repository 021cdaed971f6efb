"""Telemetry routes: GET /api/performance and GET /api/alerts (admin rule), GET /metrics.

/metrics is open, as Prometheus expects on a private network, unless METRICS_TOKEN is
set: then `Authorization: Bearer <METRICS_TOKEN>` is required (401 otherwise). The admin
key does not open it: a scraper's token and an operator's key are kept apart.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from promptrelay.api.admin import admin_guard
from promptrelay.errors import InvalidRequest, NotFound, Unauthorized
from promptrelay.telemetry.history import parse_window
from promptrelay.telemetry.prometheus import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptrelay.app import Runtime
    from promptrelay.telemetry.service import Telemetry

__all__ = ["build_telemetry_router"]


def build_telemetry_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(tags=["telemetry"])
    require_admin = Depends(admin_guard(runtime))

    def telemetry() -> Telemetry:
        found = runtime().telemetry
        if found is None:
            raise NotFound("telemetry is off (TELEMETRY_ENABLED=false)")
        return found

    @router.get(
        "/api/performance",
        summary="System and request metrics, history, advice",
        dependencies=[require_admin],
    )
    async def performance(
        window: Annotated[str, Query(description="History window: 90s, 15m, 1h, 1d")] = "1h",
    ) -> dict[str, Any]:
        try:
            seconds = parse_window(window)
        except ValueError as error:
            raise InvalidRequest(str(error)) from None
        telemetry()  # 404 when telemetry is off
        return await runtime().performance(seconds)

    @router.get(
        "/api/alerts",
        summary="Active and recent alerts",
        dependencies=[require_admin],
    )
    async def alerts() -> dict[str, Any]:
        return telemetry().alerts_view()

    def require_metrics_token(request: Request) -> None:
        token = runtime().settings.metrics_token
        if token is None:
            return
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            raise Unauthorized("/metrics: send Authorization: Bearer <METRICS_TOKEN>")

    @router.get(
        "/metrics",
        summary="Prometheus exposition",
        response_class=Response,
        dependencies=[Depends(require_metrics_token)],
    )
    async def metrics() -> Response:
        found = telemetry()
        governor = runtime().governor
        if governor is not None:
            found.prometheus.governed(governor.snapshot())
        body = await found.prometheus.render(found.stats)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
