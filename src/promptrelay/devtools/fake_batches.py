"""The fake upstream's Message Batches: create, retrieve, results as JSONL. No I/O here.

Shapes follow Anthropic's Message Batches API (platform.claude.com, "Create a Message
Batch", "Retrieve a Message Batch", "Retrieve Message Batch results"):

    POST /v1/messages/batches  {"requests": [{"custom_id", "params"}]}  -> MessageBatch
    GET  /v1/messages/batches/{id}                                      -> MessageBatch
    GET  /v1/messages/batches/{id}/results   one JSON line per request, once ended:
        {"custom_id": "...", "result": {"type": "succeeded", "message": {...}}}
        {"custom_id": "...", "result": {"type": "errored", "error": {"type": "error",
                                        "error": {"type": "...", "message": "..."}}}}

A batch is `in_progress` for the `batch_processing_ms` knob after its creation, then
`ended` with every result ready; answers are the same deterministic ones
`POST /v1/messages` gives for the same params.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from promptrelay.devtools import fake_wire as wire

__all__ = ["FakeBatches"]

_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_REQUESTS = 100_000


@dataclass(slots=True)
class _Batch:
    id: str
    created: datetime
    ready_at: float  # loop time when it ends
    delay_s: float
    results: list[dict[str, Any]] = field(default_factory=list)
    succeeded: int = 0
    errored: int = 0


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class FakeBatches:
    def __init__(self) -> None:
        self._batches: dict[str, _Batch] = {}
        self._next = 0

    def create(self, raw: bytes, *, now: float, delay_s: float) -> str:
        """Validate and accept a batch, return its id; wire.InvalidRequest names the field."""
        requests = _parse_requests(raw)
        self._next += 1
        batch = _Batch(
            id=f"msgbatch_fake{self._next:012d}",
            created=datetime.now(UTC),
            ready_at=now + delay_s,
            delay_s=delay_s,
        )
        for request in requests:
            batch.results.append(_result(request["custom_id"], request["params"]))
        batch.succeeded = sum(1 for r in batch.results if r["result"]["type"] == "succeeded")
        batch.errored = len(batch.results) - batch.succeeded
        self._batches[batch.id] = batch
        return batch.id

    def view(self, batch_id: str, *, now: float, base_url: str) -> dict[str, Any] | None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return None
        ended = now >= batch.ready_at
        total = len(batch.results)
        ended_at = batch.created + timedelta(seconds=batch.delay_s)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else total,
                "succeeded": batch.succeeded if ended else 0,
                "errored": batch.errored if ended else 0,
                "canceled": 0,
                "expired": 0,
            },
            "ended_at": _rfc3339(ended_at) if ended else None,
            "created_at": _rfc3339(batch.created),
            "expires_at": _rfc3339(batch.created + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def results(self, batch_id: str, *, now: float) -> bytes | None:
        """JSONL of an ended batch; None while it is unknown or still processing."""
        batch = self._batches.get(batch_id)
        if batch is None or now < batch.ready_at:
            return None
        return b"".join(orjson.dumps(line) + b"\n" for line in batch.results)


def _parse_requests(raw: bytes) -> list[dict[str, Any]]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise wire.InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise wire.InvalidRequest("request body must be a JSON object")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise wire.InvalidRequest("requests: field required (a non-empty list)")
    if len(requests) > _MAX_REQUESTS:
        raise wire.InvalidRequest(f"requests: at most {_MAX_REQUESTS} per batch")
    seen: set[str] = set()
    for index, request in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(request, dict):
            raise wire.InvalidRequest(f"{where}: must be an object with custom_id and params")
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise wire.InvalidRequest(f"{where}.custom_id: 1-64 of [A-Za-z0-9_-]")
        if custom_id in seen:
            raise wire.InvalidRequest(f"{where}.custom_id: duplicate {custom_id!r}")
        seen.add(custom_id)
        if not isinstance(request.get("params"), dict):
            raise wire.InvalidRequest(f"{where}.params: must be a Messages request object")
        if request["params"].get("stream"):
            raise wire.InvalidRequest(f"{where}.params.stream: not supported in batches")
    return requests


def _result(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        answer = wire.answer_for(orjson.dumps(params))
    except wire.InvalidRequest as exc:
        error = {"type": "error", "error": {"type": "invalid_request_error", "message": str(exc)}}
        return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
    message = orjson.loads(wire.message_json(answer))
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
