"""The cache management routes (admin, see api/access.py): stats, clear, warm.

Warm is a face of the pipeline: each item is the Ask /v1/messages would make (without
`stream`), prepared and run like it, so a warmed entry is the one that request hits.
POST /api/cache/warm answers one JSON object, or, asked with `Accept:
application/x-ndjson`, one JSON line per request as each finishes and a last line with
the totals (the dashboard's and the CLI's progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from promptrelay.api.access import Access
from promptrelay.cache.keys import key_pattern
from promptrelay.cache.tiered import TieredCache
from promptrelay.core.auth import KeyResolver
from promptrelay.core.pipeline import Ask, Pipeline
from promptrelay.core.request import validate_messages_body
from promptrelay.errors import GatewayError

__all__ = ["build_admin_router"]

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


def build_admin_router(
    access: Access,
    cache: TieredCache,
    pipeline: Pipeline,
    keys: KeyResolver,
    *,
    redis_state: Callable[[], str],
    savings: Callable[[], dict[str, Any]],
) -> APIRouter:
    router = APIRouter(prefix="/api/cache", dependencies=[Depends(access.admin)], tags=["cache"])

    @router.get("/stats", summary="Hits, misses, entries, bytes, Redis state, savings")
    async def stats() -> dict[str, Any]:
        return {
            **cache.stats(),
            "redis_state": redis_state(),
            "savings": savings(),
            "namespaces": cache.memory.by_namespace(),
        }

    @router.post("/clear", summary="Remove matching entries in every tier and process")
    async def clear(body: ClearRequest | None = None) -> dict[str, Any]:
        spec = body or ClearRequest()
        pattern = key_pattern(spec.namespace, spec.content_type, spec.pattern)
        removed = await cache.clear(pattern)
        return {"removed": removed, "pattern": pattern}

    @router.post(
        "/warm",
        summary="Fetch and store each request; per-item results (NDJSON progress on request)",
        response_model=None,
    )
    async def warm(body: WarmRequest, request: Request) -> dict[str, Any] | StreamingResponse:
        one = _warmer(pipeline, keys, body)
        if "application/x-ndjson" in request.headers.get("accept", ""):
            progress = _progress(one, body.requests)
            return StreamingResponse(progress, media_type="application/x-ndjson")
        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(body.requests)))
        return _totals(list(results))

    return router


def _warmer(
    pipeline: Pipeline, keys: KeyResolver, body: WarmRequest
) -> Callable[[int, dict[str, Any]], Any]:
    """One warm item as a coroutine function: validate, prepare and run, report."""
    key_headers = {b"x-api-key": body.client_key.encode()} if body.client_key else {}
    creds = keys.resolve(key_headers)
    limit = asyncio.Semaphore(body.concurrency)

    async def one(index: int, item: dict[str, Any]) -> dict[str, Any]:
        async with limit:
            try:
                validate_messages_body(item)
                payload = {k: v for k, v in item.items() if k != "stream"}
                prepared = await pipeline.prepare(Ask(creds, payload))
                reply = await pipeline.run(prepared.call)
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
