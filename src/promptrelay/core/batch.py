"""`POST /api/generate/batch`, mode "sync": every item through the micro-batcher.

    items -> each one the Ask /api/generate makes, through Pipeline.prepare (a bad one
             becomes its own error, at once)
          -> MicroBatcher.submit(model, Pipeline.run)    grouped per model, paced by
             the shared budget and this call's `concurrency`
          -> {"results": [{"index", "ok", "result" | "error"}], "summary": {...}}

An item never fails another: parse errors, upstream errors (a 200 whose body is not JSON
too: 502), our own upstream failures (timeouts, open breaker) and bugs are all reported in
that item's `error`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from promptrelay.core.auth import Credentials
from promptrelay.core.batcher import MicroBatcher
from promptrelay.core.gateway import Reply
from promptrelay.core.generate import generate_answer, generate_ask, upstream_error
from promptrelay.core.pipeline import Pipeline, Prepared
from promptrelay.core.request import json_object_or_none
from promptrelay.errors import GatewayError, InvalidRequest
from promptrelay.resilience.governor import BATCH
from promptrelay.upstream.offline import OFFLINE_HEADER

__all__ = [
    "BatchContext",
    "item_failure",
    "prepare_item",
    "run_sync_batch",
    "summarize",
]

log = logging.getLogger("promptrelay.batch")


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What every item of one batch call shares: who asked, the API version/beta as
    sent, and the pipeline every item goes through."""

    creds: Credentials
    version: str | None
    beta: str | None
    pipeline: Pipeline


async def prepare_item(item: Any, context: BatchContext) -> Prepared:
    """One batch item, prepared as /api/generate prepares its body (templates too)."""
    if not isinstance(item, dict):
        raise InvalidRequest("must be an /api/generate request object")
    try:
        raw = orjson.dumps(item)
    except TypeError as error:
        raise InvalidRequest(f"not JSON-serialisable: {error}") from None
    ask = generate_ask(raw, context.creds, version=context.version, beta=context.beta)
    return await context.pipeline.prepare(ask)


def _error(error: GatewayError) -> dict[str, Any]:
    return {"type": error.type, "message": error.message, "status": error.status}


def item_failure(index: int, error: Exception) -> dict[str, Any]:
    """One item's failure, in the shape both modes answer. A GatewayError says what went
    wrong (an invalid item names where); anything else is a bug, logged here with its
    traceback, that must cost this one item, never the whole batch (no 500)."""
    if isinstance(error, GatewayError):
        where = f"requests.{index}: " if isinstance(error, InvalidRequest) else ""
        return {
            "index": index,
            "ok": False,
            "error": {**_error(error), "message": where + error.message},
        }
    log.error("batch item %d failed unexpectedly", index, exc_info=error)
    message = "internal error on this item"
    return {"index": index, "ok": False, "error": {"type": "api_error", "message": message}}


def _from_reply(index: int, reply: Reply, prepared: Prepared, started: float) -> dict[str, Any]:
    if reply.status != 200:
        return {"index": index, "ok": False, "error": upstream_error(reply.status, reply.body)}
    message = json_object_or_none(reply.body)
    if message is None:  # a proxy's HTML page, say: the upstream's fault, not ours
        text = "the upstream answered 200 but its body is not a JSON object"
        return {"index": index, "ok": False, "error": _bad_gateway(text)}
    answer = generate_answer(
        message,
        cached=reply.cache == "HIT",
        offline=OFFLINE_HEADER in reply.headers,
        latency_ms=(time.perf_counter() - started) * 1000,
        template=prepared.template,
    )
    return {"index": index, "ok": True, "result": answer}


def _bad_gateway(message: str) -> dict[str, Any]:
    return {"type": "api_error", "message": message, "status": 502}


async def _one(
    index: int,
    item: Any,
    context: BatchContext,
    batcher: MicroBatcher[Reply],
    limit: asyncio.Semaphore,
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        prepared = await prepare_item(item, context)
        call = prepared.call
        call.priority = BATCH
        run = context.pipeline.run
        reply = await batcher.submit(str(call.body["model"]), lambda: run(call), limit)
        return _from_reply(index, reply, prepared, started)
    except Exception as error:  # item_failure logs a bug: it costs this item only
        return item_failure(index, error)


async def run_sync_batch(
    items: list[Any],
    context: BatchContext,
    *,
    batcher: MicroBatcher[Reply],
    concurrency: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    limit = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(
        *(_one(i, item, context, batcher, limit) for i, item in enumerate(items))
    )
    return {"results": results, "summary": summarize(results, started)}


def summarize(results: list[dict[str, Any]], started: float) -> dict[str, Any]:
    succeeded = [r for r in results if r["ok"]]
    return {
        "total": len(results),
        "succeeded": len(succeeded),
        "failed": len(results) - len(succeeded),
        "cached": sum(1 for r in succeeded if r["result"].get("cached")),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
