"""The non-hot routes on FastAPI (OpenAPI docs, validation): health and the routers.

Built inside the lifespan, from routers that were handed their components. Every error
leaves in Anthropic's envelope, never FastAPI's default `{"detail": ...}`; a refusal
with a wait (an open circuit) carries Retry-After, as on the hot routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from promptrelay import __version__
from promptrelay.api.asgi import ClientGone
from promptrelay.api.docs import build_docs_router
from promptrelay.api.hot_schema import build_hot_schema_router
from promptrelay.errors import GatewayError, error_body

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


def _envelope(status: int, type_: str, message: str, retry_after: float | None = None) -> Response:
    headers = None if retry_after is None else {"retry-after": str(max(1, round(retry_after)))}
    return Response(
        error_body(type_, message),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, GatewayError)
        return _envelope(error.status, error.type, error.message, error.retry_after)

    async def on_client_gone(_: Request, error: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the client left mid-body

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
    app.add_exception_handler(ClientGone, on_client_gone)


def build_management_app(
    routers: Iterable[APIRouter], *, health: Callable[[], Awaitable[dict[str, Any]]]
) -> FastAPI:
    """`health()`: the body of GET /api/health."""
    app = FastAPI(
        title="promptrelay",
        version=__version__,
        docs_url=None,  # build_docs_router: Swagger UI from local files
        redoc_url=None,
    )
    _install_error_handlers(app)
    app.include_router(build_docs_router(app.openapi_url or "/openapi.json", app.title))
    app.include_router(build_hot_schema_router())
    for router in routers:
        app.include_router(router)

    @app.get("/api/health", summary="Liveness and the state of the upstream and provider")
    async def health_route() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, **await health()}

    return app
