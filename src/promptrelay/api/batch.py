"""Batch routes (FastAPI; not hot): POST /api/generate/batch, GET /api/batches/{id}.

Same key rules as /api/generate (client key when PROMPTRELAY_API_KEYS is set; jobs are
visible to their own namespace only). The body is read with the MAX_BODY_BYTES bound and
parsed once with orjson; every item is then the Ask /api/generate's own parser makes,
prepared and run by the pipeline.

The outer app sends only the exact path /api/generate to the hot handler, so
/api/generate/batch arrives here.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from promptrelay.api.asgi import api_version, read_body, request_headers
from promptrelay.core.auth import KeyResolver
from promptrelay.core.batch import BatchContext, run_sync_batch
from promptrelay.core.batch_jobs import BatchJobs
from promptrelay.core.batcher import MicroBatcher
from promptrelay.core.gateway import Reply
from promptrelay.core.pipeline import Pipeline
from promptrelay.core.request import parse_json_object
from promptrelay.errors import InvalidRequest
from promptrelay.settings import Settings
from promptrelay.telemetry.batches import BatchStats

__all__ = ["build_batch_router"]

_FIELDS = frozenset({"requests", "concurrency", "mode"})
_MODES = ("sync", "async")
_DEFAULT_CONCURRENCY = 5

_BATCH_DOC = """Many /api/generate requests at once: `{"requests": [...], "concurrency"?, "mode"?}`.

`mode: "sync"` (default) answers when every item is done: `{"results": [{"index", "ok",
"result" | "error"}], "summary": {"total", "succeeded", "failed", "cached", "duration_ms",
"concurrency"}}`; at most `concurrency` (default 5, capped by BATCH_MAX_CONCURRENCY) items
call the upstream at once. `mode: "async"` submits one Anthropic Message Batch and answers
at once with a job; poll `GET /api/batches/{id}`. At most BATCH_MAX_ITEMS items per call.
"""


# Documentation only (the body is parsed by hand, once, with orjson): shown in /docs.
_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["requests"],
    "additionalProperties": False,
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "description": "/api/generate bodies (at most BATCH_MAX_ITEMS)",
            "items": {"type": "object"},
        },
        "concurrency": {"type": "integer", "minimum": 1, "default": _DEFAULT_CONCURRENCY},
        "mode": {"type": "string", "enum": list(_MODES), "default": "sync"},
    },
}
_BATCH_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": _BATCH_SCHEMA}}}
}


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def _parse(data: dict[str, Any], max_items: int, max_concurrency: int) -> tuple[list[Any], int]:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field; send requests, concurrency, mode")
    items = data.get("requests")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("requests: required, a non-empty list of /api/generate requests")
    if len(items) > max_items:
        raise InvalidRequest(
            f"requests: {len(items)} items; at most {max_items} per call (BATCH_MAX_ITEMS)"
        )
    concurrency = data.get("concurrency", _DEFAULT_CONCURRENCY)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidRequest("concurrency: must be an integer >= 1")
    return items, min(concurrency, max_concurrency)


def build_batch_router(
    settings: Settings,
    keys: KeyResolver,
    pipeline: Pipeline,
    *,
    batcher: MicroBatcher[Reply],
    jobs: BatchJobs,
    stats: BatchStats,
) -> APIRouter:
    router = APIRouter(tags=["batch"])

    def context(request: Request) -> BatchContext:
        headers = request_headers(request.scope)
        version, beta = api_version(headers)
        return BatchContext(keys.resolve(headers), version, beta, pipeline)

    @router.post(
        "/api/generate/batch",
        summary="Many generate requests",
        description=_BATCH_DOC,
        openapi_extra=_BATCH_BODY,
    )
    async def generate_batch(request: Request) -> Response:
        shared = context(request)  # refuse a bad key before reading a large body
        raw = await read_body(request.scope, request.receive, settings.max_body_bytes)
        data = parse_json_object(raw)
        items, concurrency = _parse(data, settings.batch_max_items, settings.batch_max_concurrency)
        mode = data.get("mode", "sync")
        if mode not in _MODES:
            raise InvalidRequest('mode: must be "sync" or "async"')
        if mode == "async":
            return _json(await jobs.submit(items, shared), status=202)
        answer = await run_sync_batch(items, shared, batcher=batcher, concurrency=concurrency)
        answer["summary"]["concurrency"] = concurrency
        return _json(answer)

    @router.get("/api/batches/stats", summary="Micro-batcher groups, sizes and waits")
    async def batch_stats(request: Request) -> Response:
        context(request)
        return _json({**stats.snapshot(), "pending": batcher.pending(), "jobs": jobs.kept()})

    @router.get("/api/batches/{job_id}", summary="Status and, once ended, results of a job")
    async def batch_job(job_id: str, request: Request) -> Response:
        return _json(await jobs.status(job_id, context(request)))

    return router
