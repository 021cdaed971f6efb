"""Admin access and the cache management routes.

Admin rule: with ADMIN_API_KEY set, `Authorization: Bearer <key>` (or x-api-key) is
required, compared in constant time: 401 without a key or with a wrong one, 403 with a
client key (it is valid, just not for this). Without ADMIN_API_KEY, only loopback
clients are answered (403 otherwise). On top of either, `sameorigin.py`'s checks refuse
(403) what looks like another site driving the gateway through a browser.

POST /api/cache/warm answers one JSON object, or, asked with `Accept:
application/x-ndjson`, one JSON line per request as each finishes and a last line with
the totals (the dashboard's and the CLI's progress).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from promptrelay.api.sameorigin import cross_site_refusal
from promptrelay.core.auth import client_key
from promptrelay.core.cache_control import DEFAULT
from promptrelay.core.gateway import MessagesCall
from promptrelay.core.request import validate_messages_body
from promptrelay.errors import Forbidden, GatewayError, InvalidRequest, Unauthorized
from promptrelay.settings import Settings, is_loopback_host

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from promptrelay.app import Runtime

__all__ = ["admin_guard", "build_admin_router"]

_NAME = r"^[A-Za-z0-9_*?\[\]-]+$"  # glob characters, but never ':' (segment separator)


class ClearRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: Annotated[str, Field(pattern=r"^[^:\s]+$", max_length=200)] = "*"
    content_type: Annotated[str, Field(pattern=_NAME, max_length=64)] = "*"
    namespace: Annotated[str, Field(pattern=_NAME, max_length=64)] = "*"


class WarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000)]
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    client_key: str | None = Field(
        default=None,
        description="Warm the cache namespace of this client key (default: the gateway's).",
    )


def admin_guard(runtime: Callable[[], Runtime]) -> Callable[[Request], None]:
    """The dependency every admin route uses (see the module docstring for the rule)."""

    def require_admin(request: Request) -> None:
        rt = runtime()
        admin = rt.settings.admin_api_key
        refusal = _cross_site(request, rt.settings)
        if refusal is not None:
            raise Forbidden(refusal)
        if admin is None:
            host = request.client.host if request.client else ""
            if not is_loopback_host(host):
                raise Forbidden("admin routes answer loopback clients only unless ADMIN_API_KEY")
            return
        headers = {k.lower().encode(): v.encode("latin-1") for k, v in request.headers.items()}
        presented = client_key(headers)
        if presented is None:
            raise Unauthorized("admin route: send Authorization: Bearer <ADMIN_API_KEY>")
        if hmac.compare_digest(presented.encode(), admin.get_secret_value().encode()):
            return
        if rt.keys.check_client_key(presented):
            raise Forbidden("a client key cannot use admin routes")
        raise Unauthorized("invalid admin key")

    return require_admin


def _cross_site(request: Request, settings: Settings) -> str | None:
    allowed = [*settings.admin_hosts, settings.host]
    return cross_site_refusal(
        {name.lower(): value for name, value in request.headers.items()},
        method=request.method,
        keyed=settings.admin_api_key is not None,
        allowed_hosts=allowed,
    )


def build_admin_router(runtime: Callable[[], Runtime]) -> APIRouter:
    require_admin = admin_guard(runtime)
    router = APIRouter(prefix="/api/cache", dependencies=[Depends(require_admin)], tags=["cache"])

    @router.get("/stats", summary="Hits, misses, entries, bytes, Redis state, savings")
    async def stats() -> dict[str, Any]:
        rt = runtime()
        return {
            **rt.cache.stats(),
            "redis_state": rt.redis_state,
            "savings": rt.savings(),
            "namespaces": rt.cache.memory.by_namespace(),
        }

    @router.post("/clear", summary="Remove matching entries in every tier and process")
    async def clear(body: ClearRequest | None = None) -> dict[str, Any]:
        spec = body or ClearRequest()
        pattern = f"pr:{spec.namespace}:{spec.content_type}:{spec.pattern}"
        removed = await runtime().cache.clear(pattern)
        return {"removed": removed, "pattern": pattern}

    @router.post(
        "/warm",
        summary="Fetch and store each request; per-item results (NDJSON progress on request)",
        response_model=None,
    )
    async def warm(body: WarmRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        one = _warmer(runtime(), body)
        if "application/x-ndjson" in request.headers.get("accept", ""):
            progress = _progress(one, body.requests)
            return StreamingResponse(progress, media_type="application/x-ndjson")
        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(body.requests)))
        return _totals(list(results))

    return router


def _dumps(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError as error:
        raise InvalidRequest(f"request is not JSON-serialisable: {error}") from None


def _warmer(rt: Runtime, body: WarmRequest) -> Callable[[int, dict[str, Any]], Any]:
    """One warm item as a coroutine function: validate, call the gateway, report."""
    key_headers = {b"x-api-key": body.client_key.encode()} if body.client_key else {}
    creds = rt.keys.resolve(key_headers)
    limit = asyncio.Semaphore(body.concurrency)

    async def one(index: int, item: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            try:
                validate_messages_body(item)
                await rt.providers.refresh()
                payload = {k: v for k, v in item.items() if k != "stream"}
                # as /v1/messages does: the alias resolved before the key is computed
                payload["model"] = rt.providers.resolve(payload["model"])
                call = MessagesCall(
                    body=payload,
                    raw=_dumps(payload),
                    stream=False,
                    creds=creds,
                    version=rt.settings.anthropic_version,
                    control=DEFAULT,
                    timeout=rt.providers.timeout(payload["model"]),
                )
                reply = await rt.gateway.messages(call)
            except GatewayError as error:
                return {"index": index, "ok": False, "error": error.message}
            ok = reply.status == 200
            result: dict[str, Any] = {"index": index, "ok": ok, "cache": reply.cache}
            if not ok:
                result["error"] = f"upstream answered {reply.status}"
            return result

    return one


def _totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "results": sorted(results, key=lambda r: int(r["index"])),
        "stored": sum(1 for r in results if r["ok"] and r["cache"] == "MISS"),
        "already_cached": sum(1 for r in results if r["ok"] and r["cache"] == "HIT"),
        "failed": sum(1 for r in results if not r["ok"]),
    }


async def _progress(
    one: Callable[[int, dict[str, Any]], Any], requests: list[dict[str, Any]]
) -> AsyncIterator[bytes]:
    """A line per item in the order they finish, then {"done": true, ...totals}. A client
    that leaves cancels the items not yet finished."""
    tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(requests)]
    results = []
    try:
        for finished in asyncio.as_completed(tasks):
            result = await finished
            results.append(result)
            yield orjson.dumps(result) + b"\n"
        totals = _totals(results)
        del totals["results"]
        yield orjson.dumps({"done": True, "total": len(results), **totals}) + b"\n"
    finally:
        for task in tasks:
            task.cancel()
