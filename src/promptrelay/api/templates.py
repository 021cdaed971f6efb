"""Template routes (FastAPI, mounted on the management app).

    PUT    /api/templates/{name}            admin: save a new version -> 201 {name, version}
    DELETE /api/templates/{name}            admin: delete every version
    GET    /api/templates                   latest version of each template
    GET    /api/templates/{name}            one template (latest, or ?version=N)
    GET    /api/templates/{name}/versions   every version, oldest first
    POST   /api/templates/{name}/render     dry run: the rendered text and the Messages
                                            body /api/generate would send; no upstream call

Reads follow the client-key rule of /api/generate (open unless PROMPTRELAY_API_KEYS is
set; the admin key works too); writes follow the admin rule (`api/admin.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from promptrelay.api.admin import admin_guard
from promptrelay.core.auth import client_key
from promptrelay.templates.model import MAX_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptrelay.app import Runtime

__all__ = ["build_templates_router"]


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict)
    version: Annotated[int, Field(ge=1, le=MAX_VERSION)] | None = None


def _reader_guard(runtime: Callable[[], Runtime]) -> Callable[[Request], None]:
    require_admin = admin_guard(runtime)

    def require_reader(request: Request) -> None:
        rt = runtime()
        if not rt.keys.requires_client_key:
            return
        headers = {k.lower().encode(): v.encode("latin-1") for k, v in request.headers.items()}
        presented = client_key(headers)
        if presented is not None and rt.keys.check_client_key(presented):
            return
        require_admin(request)

    return require_reader


def build_templates_router(runtime: Callable[[], Runtime]) -> APIRouter:
    admin = [Depends(admin_guard(runtime))]
    reader = [Depends(_reader_guard(runtime))]
    router = APIRouter(prefix="/api/templates", tags=["templates"])

    @router.put("/{name}", dependencies=admin, status_code=201, summary="Save a new version")
    async def save(name: str, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        saved = await runtime().templates.save(name, body)
        return JSONResponse({"name": saved.name, "version": saved.version}, status_code=201)

    @router.delete("/{name}", dependencies=admin, summary="Delete every version")
    async def delete(name: str) -> dict[str, Any]:
        removed = await runtime().templates.delete(name)
        return {"name": name, "deleted_versions": removed}

    @router.get("", dependencies=reader, summary="The latest version of every template")
    async def list_templates() -> dict[str, Any]:
        latest = await runtime().templates.list_latest()
        return {"templates": [info.to_json() for info in latest]}

    @router.get("/{name}", dependencies=reader, summary="One template, latest or ?version=N")
    async def get(
        name: str, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
    ) -> dict[str, Any]:
        template = await runtime().templates.get(name, version)
        return template.to_json()

    @router.get("/{name}/versions", dependencies=reader, summary="Every version")
    async def versions(name: str) -> dict[str, Any]:
        found = await runtime().templates.versions(name)
        return {"name": name, "versions": [info.to_json() for info in found]}

    @router.post("/{name}/render", dependencies=reader, summary="Dry run: no upstream call")
    async def render(name: str, body: RenderRequest | None = None) -> dict[str, Any]:
        rt = runtime()
        spec = body or RenderRequest()
        rendered = await rt.templates.render(name, spec.version, spec.variables)
        request = rendered.messages_body(
            {},
            default_model=rt.settings.default_model,
            default_max_tokens=rt.settings.default_max_tokens,
        )
        request["model"] = rt.providers.resolve(request["model"])
        return {
            "name": rendered.name,
            "version": rendered.version,
            "system": rendered.system,
            "prompt": rendered.prompt,
            "request": request,
        }

    return router
