"""`POST /api/generate/batch`, mode "sync": every item through the micro-batcher.

    items -> parse each like /api/generate (a bad one becomes its own error, at once)
          -> MicroBatcher.submit(model, Gateway.messages)    grouped per model, paced by
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
from promptrelay.core.gateway import Gateway, MessagesCall, Reply
from promptrelay.core.generate import GenerateFront, Prepared, generate_answer, upstream_error
from promptrelay.core.request import json_object_or_none
from promptrelay.errors import GatewayError, InvalidRequest
from promptrelay.resilience.governor import BATCH

__all__ = [
    "BatchContext",
    "item_call",
    "item_failure",
    "prepare_item",
    "run_sync_batch",
    "summarize",
]

log = logging.getLogger("promptrelay.batch")

_OFFLINE = (b"x-promptrelay-provider", b"offline")


@dataclass(frozen=True, slots=True)
class BatchContext:
    """What every item of one batch call shares: who asked, and the API version/beta."""

    creds: Credentials
    version: str
    beta: str | None
    front: GenerateFront


async def prepare_item(item: Any, context: BatchContext) -> Prepared:
    """One batch item, prepared by the very code /api/generate uses (templates too)."""
    if not isinstance(item, dict):
        raise InvalidRequest("must be an /api/generate request object")
    try:
        raw = orjson.dumps(item)
    except TypeError as error:
        raise InvalidRequest(f"not JSON-serialisable: {error}") from None
    return await context.front.prepare(raw)


def item_call(prepared: Prepared, context: BatchContext) -> MessagesCall:
    return context.front.call(prepared, context.creds, version=context.version, beta=context.beta)


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
        offline=_OFFLINE in reply.headers,
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
    gateway: Gateway,
    batcher: MicroBatcher[Reply],
    limit: asyncio.Semaphore,
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        prepared = await prepare_item(item, context)
        call = item_call(prepared, context)
        call.priority = BATCH
        reply = await batcher.submit(str(call.body["model"]), lambda: gateway.messages(call), limit)
        return _from_reply(index, reply, prepared, started)
    except Exception as error:  # item_failure logs a bug: it costs this item only
        return item_failure(index, error)


async def run_sync_batch(
    items: list[Any],
    context: BatchContext,
    *,
    gateway: Gateway,
    batcher: MicroBatcher[Reply],
    concurrency: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    limit = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(
        *(_one(i, item, context, gateway, batcher, limit) for i, item in enumerate(items))
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
