"""GET / -> /dashboard: the live page for a person, and GET /api/dashboard, its data.

The page is three files shipped in the package (`static/`): HTML, one script that draws
its charts as plain SVG, one stylesheet. It polls /api/dashboard every DASHBOARD_REFRESH
seconds. Access follows the admin rule: the data always needs it; the page itself holds
no data, so with ADMIN_API_KEY set anyone may load it (it then asks for the key, keeps it
in sessionStorage and sends it as a Bearer header), and without one it answers loopback
clients only, like every admin route. A Content-Security-Policy keeps the page from
loading or sending anything to another origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from promptrelay import __version__
from promptrelay.api.telemetry_routes import window_seconds
from promptrelay.errors import NotFound
from promptrelay.telemetry.service import Telemetry

__all__ = ["ASSETS", "build_dashboard_router"]

ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"content-security-policy": _CSP, "x-content-type-options": "nosniff"}


def build_dashboard_router(
    require_admin: Callable[[Request], None],
    *,
    keyed: Callable[[], bool],
    performance: Callable[[float], Awaitable[dict[str, Any]]],
    telemetry: Callable[[], Telemetry | None],
    refresh: Callable[[], float],
    mode: Callable[[], str],
) -> APIRouter:
    """`keyed()`: ADMIN_API_KEY is set; `performance(seconds)`: the /api/performance body;
    `telemetry()`: None when it is off; `refresh()`: seconds between the page's polls;
    `mode()`: live, offline, ..."""
    static = files("promptrelay.api") / "static"

    def page_access(request: Request) -> None:
        if not keyed():
            require_admin(request)

    router = APIRouter()
    page = [Depends(page_access)]

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)

    @router.get("/dashboard", dependencies=page, include_in_schema=False)
    async def dashboard() -> Response:
        body = (static / "dashboard.html").read_bytes()
        return Response(body, media_type="text/html; charset=utf-8", headers=_HEADERS)

    @router.get("/dashboard/assets/{name}", dependencies=page, include_in_schema=False)
    async def asset(name: Annotated[str, Path()]) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no dashboard asset {name!r}")
        return Response((static / name).read_bytes(), media_type=media_type, headers=_HEADERS)

    router.include_router(_data_router(require_admin, performance, telemetry, refresh, mode))
    return router


def _data_router(
    require_admin: Callable[[Request], None],
    performance: Callable[[float], Awaitable[dict[str, Any]]],
    telemetry: Callable[[], Telemetry | None],
    refresh: Callable[[], float],
    mode: Callable[[], str],
) -> APIRouter:
    data = APIRouter(tags=["telemetry"], dependencies=[Depends(require_admin)])

    @data.get("/api/dashboard", summary="What the dashboard shows: performance, last requests")
    async def view(
        window: Annotated[str, Query(description="History window: 1h or 1d")] = "1h",
    ) -> dict[str, Any]:
        seconds = window_seconds(window)
        found = telemetry()
        if found is None:
            raise NotFound("telemetry is off (TELEMETRY_ENABLED=false): nothing to show")
        return {
            "refresh_s": refresh(),
            "mode": mode(),
            "version": __version__,
            "performance": await performance(seconds),
            "thresholds": asdict(found.thresholds),
            "recent_requests": found.stats.last_requests(),
            "counts": found.stats.counts_by(),
        }

    return data
