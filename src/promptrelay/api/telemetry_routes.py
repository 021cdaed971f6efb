"""Telemetry routes: GET /api/performance and GET /api/alerts (admin rule), GET /metrics.

/metrics is open, as Prometheus expects on a private network, unless METRICS_TOKEN is
set: then `Authorization: Bearer <METRICS_TOKEN>` is required (401 otherwise). The admin
key does not open it: a scraper's token and an operator's key are kept apart.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import SecretStr

from promptrelay.api.access import Access
from promptrelay.errors import InvalidRequest, NotFound, Unauthorized
from promptrelay.telemetry.history import parse_window
from promptrelay.telemetry.prometheus import CONTENT_TYPE_LATEST
from promptrelay.telemetry.service import Telemetry

__all__ = ["build_telemetry_router", "window_seconds"]


def window_seconds(window: str) -> float:
    """A `?window=` value (90s, 15m, 1h, 1d) in seconds; InvalidRequest when malformed."""
    try:
        return parse_window(window)
    except ValueError as error:
        raise InvalidRequest(str(error)) from None


def build_telemetry_router(
    access: Access,
    telemetry: Telemetry | None,
    *,
    metrics_token: SecretStr | None,
    performance_body: Callable[[float], Awaitable[dict[str, Any]]],
    governor: Callable[[], dict[str, Any] | None] = lambda: None,
) -> APIRouter:
    """`performance_body(window)`: the /api/performance body (telemetry's view and the
    gateway's own state: cache tiers and savings, upstream pool, breaker)."""
    router = APIRouter(tags=["telemetry"])
    require_admin = Depends(access.admin)

    def started() -> Telemetry:
        if telemetry is None:
            raise NotFound("telemetry is off (TELEMETRY_ENABLED=false)")
        return telemetry

    @router.get(
        "/api/performance",
        summary="System and request metrics, history, advice",
        dependencies=[require_admin],
    )
    async def performance(
        window: Annotated[str, Query(description="History window: 90s, 15m, 1h, 1d")] = "1h",
    ) -> dict[str, Any]:
        seconds = window_seconds(window)
        started()  # 404 when telemetry is off
        return await performance_body(seconds)

    @router.get(
        "/api/alerts",
        summary="Active and recent alerts",
        dependencies=[require_admin],
    )
    async def alerts() -> dict[str, Any]:
        return started().alerts_view()

    @router.get(
        "/metrics",
        summary="Prometheus exposition",
        response_class=Response,
        dependencies=[Depends(_metrics_guard(metrics_token))],
    )
    async def metrics() -> Response:
        found = started()
        snapshot = governor()
        if snapshot is not None:
            found.prometheus.governed(snapshot)
        body = await found.prometheus.render(found.stats)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def _metrics_guard(token: SecretStr | None) -> Callable[[Request], None]:
    """The /metrics rule (see the module docstring)."""

    def require_metrics_token(request: Request) -> None:
        if token is None:
            return
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), expected
        ):
            raise Unauthorized("/metrics: send Authorization: Bearer <METRICS_TOKEN>")

    return require_metrics_token
