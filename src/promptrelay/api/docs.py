"""GET /docs: Swagger UI from files on this machine, so it works offline.

The assets (Swagger UI's bundle, stylesheet and a favicon) come from the fastapi-offline
package, which ships them; nothing on the page is fetched from another host (the online
validator badge is turned off as well).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from promptrelay.errors import NotFound

__all__ = ["build_docs_router"]

_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_PREFIX = "/docs/assets"


def build_docs_router(openapi_url: str, title: str) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    static = files("fastapi_offline") / "static"

    @router.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - API",
            swagger_js_url=f"{_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{_PREFIX}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(_PREFIX + "/{name}")
    async def asset(name: Annotated[str, Path()]) -> Response:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no docs asset {name!r}")
        body = (static / name).read_bytes()
        return Response(body, media_type=media_type, headers={"cache-control": "max-age=3600"})

    return router
