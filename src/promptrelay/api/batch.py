"""Batch routes (FastAPI; not hot): POST /api/generate/batch, GET /api/batches/{id}.

Same key rules as /api/generate (client key when PROMPTRELAY_API_KEYS is set; jobs are
visible to their own namespace only). The body is read with the MAX_BODY_BYTES bound and
parsed once with orjson; every item is then parsed by /api/generate's own parser.

The outer app sends only the exact path /api/generate to the hot handler, so
/api/generate/batch arrives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from promptrelay.core.batch import BatchContext, run_sync_batch
from promptrelay.core.request import parse_json_object
from promptrelay.errors import InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from collections.abc import Callable

    from promptrelay.app import Runtime

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


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than MAX_BODY_BYTES ({limit})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than MAX_BODY_BYTES ({limit})")
        chunks.append(chunk)
    return b"".join(chunks)


def _context(rt: Runtime, request: Request) -> BatchContext:
    headers = {k.lower().encode(): v.encode("latin-1") for k, v in request.headers.items()}
    creds = rt.keys.resolve(headers)
    version = headers.get(b"anthropic-version")
    beta = headers.get(b"anthropic-beta")
    return BatchContext(
        creds=creds,
        version=version.decode("latin-1") if version else rt.settings.anthropic_version,
        beta=beta.decode("latin-1") if beta else None,
        front=rt.front,
    )


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


def build_batch_router(runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(tags=["batch"])

    @router.post(
        "/api/generate/batch",
        summary="Many generate requests",
        description=_BATCH_DOC,
        openapi_extra=_BATCH_BODY,
    )
    async def generate_batch(request: Request) -> Response:
        rt = runtime()
        context = _context(rt, request)  # refuse a bad key before reading a large body
        data = parse_json_object(await _read_bounded(request, rt.settings.max_body_bytes))
        settings = rt.settings
        items, concurrency = _parse(data, settings.batch_max_items, settings.batch_max_concurrency)
        mode = data.get("mode", "sync")
        if mode not in _MODES:
            raise InvalidRequest('mode: must be "sync" or "async"')
        if mode == "async":
            return _json(await rt.batch_jobs.submit(items, context), status=202)
        answer = await run_sync_batch(
            items, context, gateway=rt.gateway, batcher=rt.batcher, concurrency=concurrency
        )
        answer["summary"]["concurrency"] = concurrency
        return _json(answer)

    @router.get("/api/batches/stats", summary="Micro-batcher groups, sizes and waits")
    async def batch_stats(request: Request) -> Response:
        rt = runtime()
        _context(rt, request)
        stats = rt.batch_stats.snapshot()
        return _json({**stats, "pending": rt.batcher.pending(), "jobs": len(rt.batch_jobs)})

    @router.get("/api/batches/{job_id}", summary="Status and, once ended, results of a job")
    async def batch_job(job_id: str, request: Request) -> Response:
        rt = runtime()
        return _json(await rt.batch_jobs.status(job_id, _context(rt, request)))

    return router
