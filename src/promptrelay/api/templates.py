"""Template routes (FastAPI, mounted on the management app).

    PUT    /api/templates/{name}            admin: save a new version -> 201 {name, version}
    DELETE /api/templates/{name}            admin: delete every version
    GET    /api/templates                   latest version of each template
    GET    /api/templates/{name}            one template (latest, or ?version=N)
    GET    /api/templates/{name}/versions   every version, oldest first
    POST   /api/templates/{name}/render     dry run: the rendered text, the Messages
                                            body /api/generate would send and the cache
                                            key it would use; no upstream call

Reads follow the reader rule, writes the admin rule (api/access.py). The dry run is a
face of the pipeline: it prepares the very Ask `{"template": name, ...}` to
/api/generate makes, so its model (alias, providers file default) and cache key are
the ones that request gets.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from promptrelay.api.access import Access
from promptrelay.api.asgi import api_version, request_headers
from promptrelay.core.auth import Credentials, KeyResolver
from promptrelay.core.pipeline import Ask, Pipeline
from promptrelay.core.request import TemplateCall
from promptrelay.errors import Unauthorized
from promptrelay.templates.model import MAX_VERSION
from promptrelay.templates.service import TemplateService

__all__ = ["build_templates_router"]


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict)
    version: Annotated[int, Field(ge=1, le=MAX_VERSION)] | None = None


def _credentials(keys: KeyResolver, headers: dict[bytes, bytes]) -> Credentials:
    """The caller's namespace, as /api/generate would resolve it; an admin reading with
    the admin key (no client key) sees the gateway's own namespace."""
    try:
        return keys.resolve(headers)
    except Unauthorized:
        return keys.gateway_credentials


def build_templates_router(
    access: Access, templates: TemplateService, pipeline: Pipeline, keys: KeyResolver
) -> APIRouter:
    admin = [Depends(access.admin)]
    reader = [Depends(access.reader)]
    router = APIRouter(prefix="/api/templates", tags=["templates"])

    @router.put("/{name}", dependencies=admin, status_code=201, summary="Save a new version")
    async def save(name: str, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        saved = await templates.save(name, body)
        return JSONResponse({"name": saved.name, "version": saved.version}, status_code=201)

    @router.delete("/{name}", dependencies=admin, summary="Delete every version")
    async def delete(name: str) -> dict[str, Any]:
        removed = await templates.delete(name)
        return {"name": name, "deleted_versions": removed}

    @router.get("", dependencies=reader, summary="The latest version of every template")
    async def list_templates() -> dict[str, Any]:
        latest = await templates.list_latest()
        return {"templates": [info.to_json() for info in latest]}

    @router.get("/{name}", dependencies=reader, summary="One template, latest or ?version=N")
    async def get(
        name: str, version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None
    ) -> dict[str, Any]:
        template = await templates.get(name, version)
        return template.to_json()

    @router.get("/{name}/versions", dependencies=reader, summary="Every version")
    async def versions(name: str) -> dict[str, Any]:
        found = await templates.versions(name)
        return {"name": name, "versions": [info.to_json() for info in found]}

    @router.post("/{name}/render", dependencies=reader, summary="Dry run: no upstream call")
    async def render(
        name: str, request: Request, body: RenderRequest | None = None
    ) -> dict[str, Any]:
        spec = body or RenderRequest()
        headers = request_headers(request.scope)
        version, beta = api_version(headers)
        ask = Ask(
            _credentials(keys, headers),
            {},
            version=version,
            beta=beta,
            template=TemplateCall(name, spec.version, spec.variables),
        )
        prepared = await pipeline.prepare(ask)
        assert prepared.template is not None  # the ask named one
        return {
            "name": prepared.template.name,
            "version": prepared.template.version,
            "system": prepared.template.system,
            "prompt": prepared.template.prompt,
            "request": prepared.call.body,
            "cache_key": pipeline.cache_key(prepared.call),
        }

    return router
