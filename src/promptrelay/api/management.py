"""The non-hot routes on FastAPI (OpenAPI docs, validation): health and, later, admin.

Every error leaves in Anthropic's envelope, never FastAPI's default `{"detail": ...}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from promptrelay import __version__
from promptrelay.api.admin import admin_guard, build_admin_router
from promptrelay.api.batch import build_batch_router
from promptrelay.api.dashboard import build_dashboard_router
from promptrelay.api.docs import build_docs_router
from promptrelay.api.hot_schema import build_hot_schema_router
from promptrelay.api.keys import build_keys_router
from promptrelay.api.providers import build_providers_router
from promptrelay.api.telemetry_routes import build_telemetry_router
from promptrelay.api.templates import build_templates_router
from promptrelay.errors import GatewayError, error_body

if TYPE_CHECKING:
    from promptrelay.app import Runtime

__all__ = ["build_management_app"]

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def _envelope(status: int, type_: str, message: str) -> Response:
    return Response(error_body(type_, message), status_code=status, media_type="application/json")


def _install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, GatewayError)
        return _envelope(error.status, error.type, error.message)

    async def on_validation(_: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        return _envelope(400, "invalid_request_error", f"{field}: {first['msg']}")

    async def on_http(_: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        type_ = _STATUS_TYPES.get(error.status_code, "api_error")
        return _envelope(error.status_code, type_, str(error.detail))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)


def build_management_app(runtime: Callable[[], Runtime]) -> FastAPI:
    """`runtime()` returns the started components (they exist only inside the lifespan)."""
    app = FastAPI(
        title="promptrelay",
        version=__version__,
        docs_url=None,  # build_docs_router: Swagger UI from local files
        redoc_url=None,
    )
    _install_error_handlers(app)
    app.include_router(build_docs_router(app.openapi_url or "/openapi.json", app.title))
    app.include_router(build_hot_schema_router())
    app.include_router(build_admin_router(runtime))
    app.include_router(build_batch_router(runtime))
    app.include_router(build_keys_router(runtime))
    app.include_router(build_templates_router(runtime))
    app.include_router(build_providers_router(runtime))
    app.include_router(build_telemetry_router(runtime))
    app.include_router(
        build_dashboard_router(
            admin_guard(runtime),
            keyed=lambda: runtime().settings.admin_api_key is not None,
            performance=lambda window: runtime().performance(window),
            telemetry=lambda: runtime().telemetry,
            refresh=lambda: runtime().settings.dashboard_refresh,
            mode=lambda: runtime().mode,
        )
    )

    @app.get("/api/health", summary="Liveness and the state of the upstream and provider")
    async def health() -> dict[str, Any]:
        rt = runtime()
        return {
            "status": "ok",
            "version": __version__,
            "mode": rt.mode,
            "served_by_key_mode": dict(rt.gateway.served_by_mode),
            "upstream": await rt.upstream_status(),
            "breaker": rt.breaker.snapshot(),
            "redis": rt.redis_state,
            "cache": {"entries": len(rt.cache.memory), "bytes": rt.cache.memory.bytes},
        }

    return app
