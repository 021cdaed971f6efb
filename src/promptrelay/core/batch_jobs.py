"""`POST /api/generate/batch` mode "async": one Anthropic Message Batch per call.

    submit: prepare items like /api/generate (bad ones: their own error, at once)
            -> already cached items answered from the cache (Pipeline.lookup: never
               sent, never paid, counted as hits)
            -> the rest: POST /v1/messages/batches {"requests": [{"custom_id", "params"}]}
            -> a job id, answered at once
    status: GET /v1/messages/batches/{id}; once `ended`, GET its results_url (JSONL)
            -> each succeeded message stored (Pipeline.remember) under the key the
               same /api/generate would use (so that prompt is later a HIT), then
               per-item results in the sync mode's shape

Job state lives in this process's memory, at most BATCH_JOBS_MAX jobs and
BATCH_JOBS_MAX_BYTES for all of them together (the oldest are forgotten first; the newest
job is always kept). A waiting item keeps only its Messages body (to store its result
under the key /api/generate would use) and its template's name and version; its size is
that of its Message Batch entry, a result's that of its JSON. A job is visible only to the
cache namespace (client key) that made it. The job keeps the credentials that created it,
in memory only: polling must use the key the batch belongs to. Results are fetched only
from the configured upstream's origin, so our key never follows a results_url elsewhere.

Every Message Batches call is a pass-through of the pipeline: one attempt through the
circuit breaker, refused at once (503 + Retry-After) while it is open.

An item never fails another: a bad item, one whose entry cannot be encoded, or a bug
while preparing it, is that item's own error (as in sync mode).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from promptrelay.core.batch import BatchContext, item_failure, prepare_item, summarize
from promptrelay.core.gateway import MessagesCall, Reply
from promptrelay.core.generate import generate_answer, upstream_error
from promptrelay.core.pipeline import Pipeline, Prepared
from promptrelay.core.request import json_object_or_none
from promptrelay.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    OfflineUnsupported,
    UpstreamUnavailable,
)
from promptrelay.templates.render import Rendered
from promptrelay.upstream.paths import UnsafePath, canonical_target, is_plain_id

__all__ = ["BatchJobs", "Preparer", "UpstreamRefused", "results_path"]

_BATCHES = "/v1/messages/batches"

# Parses one item like /api/generate (core.batch.prepare_item); raises for a bad one.
Preparer = Callable[[Any, BatchContext], Awaitable[Prepared]]


class UpstreamRefused(GatewayError):
    """The upstream answered a Message Batches call with an error; passed on as is."""

    def __init__(self, status: int, body: bytes) -> None:
        detail = upstream_error(status, body)
        super().__init__(f"Message Batches: {detail['message']}")
        self.status = status
        self.type = detail["type"]


@dataclass(frozen=True, slots=True)
class _Pending:
    """An item sent in the Message Batch, waiting for its result: only what storing and
    answering that result needs. Its call without the raw bytes (they would be a second
    copy of the body): the result is stored under that call's cache key, if its cache
    control allows ("cache": false says no)."""

    index: int
    call: MessagesCall
    template: Rendered | None  # name and version only (what the answer reports)
    size: int  # bytes of its Message Batch entry


@dataclass(slots=True)
class _Job:
    id: str
    context: BatchContext
    total: int
    created: datetime
    started: float  # perf_counter, for summary.duration_ms
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    pending_bytes: int = 0
    result_bytes: int = 0
    upstream_id: str | None = None
    status: str = "in_progress"
    request_counts: dict[str, Any] | None = None
    duration_ms: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        """What this job counts against BATCH_JOBS_MAX_BYTES."""
        return self.pending_bytes + self.result_bytes

    def answer(self, index: int, result: dict[str, Any]) -> None:
        self.results[index] = result
        self.result_bytes += len(orjson.dumps(result))


class BatchJobs:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_jobs: int,
        max_bytes: int,
        prepare: Preparer = prepare_item,
    ) -> None:
        self._pipeline = pipeline
        self._max = max_jobs
        self._max_bytes = max_bytes
        self.prepare_item = prepare  # how an item becomes a call (a test swaps it)
        self._jobs: OrderedDict[str, _Job] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    async def submit(self, items: list[Any], context: BatchContext) -> dict[str, Any]:
        if context.creds.upstream_key is None:
            raise OfflineUnsupported(
                'mode "async" needs an Anthropic key (ANTHROPIC_API_KEY, or the client\'s own '
                'key): the offline provider has no Message Batches; use mode "sync"'
            )
        job = _Job(
            id="prbatch_" + secrets.token_hex(12),
            context=context,
            total=len(items),
            created=datetime.now(UTC),
            started=time.perf_counter(),
        )
        entries: list[bytes] = []
        for index, item in enumerate(items):
            try:
                entry = await self._prepare(job, index, item)
            except Exception as error:  # item_failure logs a bug: it costs this item only
                job.answer(index, item_failure(index, error))
                continue
            if entry is not None:
                entries.append(entry)
        if entries:
            await self._create_upstream(job, entries)
        else:
            self._end(job)
        self._jobs[job.id] = job
        self._trim(keep=job)
        return _view(job)

    async def status(self, job_id: str, context: BatchContext) -> dict[str, Any]:
        job = self._jobs.get(job_id)
        if job is None or job.context.creds.namespace != context.creds.namespace:
            kept = (
                f"jobs are kept in memory, at most {self._max} (BATCH_JOBS_MAX) and "
                f"{self._max_bytes} bytes (BATCH_JOBS_MAX_BYTES); the oldest are forgotten first"
            )
            raise NotFound(f"no batch job {job_id!r} ({kept})")
        async with job.lock:
            if job.status != "ended":
                await self._refresh(job)
                self._trim(keep=job)  # its results replaced its bodies: the size moved
        return _view(job)

    # -- submission ------------------------------------------------------------------

    async def _prepare(self, job: _Job, index: int, item: Any) -> bytes | None:
        """Answer the item from the cache (None), or make it pending and return its
        Message Batch entry. Raises for a bad item (or a bug): its own error."""
        context = job.context
        prepared = await self.prepare_item(item, context)
        call = prepared.call
        if call.control.lookup:
            entry = await self._pipeline.lookup(call)
            if entry is not None:
                answer = generate_answer(
                    orjson.loads(entry.value),
                    cached=True,
                    offline=False,
                    latency_ms=0.0,
                    template=prepared.template,
                )
                job.answer(index, {"index": index, "ok": True, "result": answer})
                return None
        custom_id = f"item-{index}"
        encoded = _entry(custom_id, call.body)
        template = _name_and_version(prepared.template)
        job.pending[custom_id] = _Pending(index, replace(call, raw=b""), template, len(encoded))
        job.pending_bytes += len(encoded)
        return encoded

    async def _create_upstream(self, job: _Job, entries: list[bytes]) -> None:
        body = b'{"requests":[' + b",".join(entries) + b"]}"  # each entry encoded once
        response = await self._request(job, "POST", _BATCHES, body)
        batch = _object(response)
        upstream_id = batch.get("id")
        if not is_plain_id(upstream_id):  # it becomes a path segment of every poll
            raise UpstreamUnavailable("the upstream's Message Batch id is not a plain id")
        job.upstream_id = upstream_id
        self._update(job, batch)

    def _trim(self, keep: _Job) -> None:
        """Forget the oldest jobs (never `keep`, the one just added or updated) until at
        most BATCH_JOBS_MAX jobs of BATCH_JOBS_MAX_BYTES together are left."""
        total = sum(job.size for job in self._jobs.values())
        for job_id in list(self._jobs):
            if len(self._jobs) <= self._max and total <= self._max_bytes:
                return
            if job_id != keep.id:
                total -= self._jobs.pop(job_id).size

    # -- polling ---------------------------------------------------------------------

    async def _refresh(self, job: _Job) -> None:
        response = await self._request(job, "GET", f"{_BATCHES}/{job.upstream_id}")
        batch = _object(response)
        self._update(job, batch)
        if batch.get("processing_status") != "ended":
            return
        path = results_path(self._pipeline.base_url, batch.get("results_url"))
        lines = (await self._request(job, "GET", path)).body
        await self._collect(job, lines)
        self._end(job)

    def _update(self, job: _Job, batch: dict[str, Any]) -> None:
        status = str(batch.get("processing_status", job.status))
        if status != "ended":  # "ended" is ours to set, once the results are in
            job.status = status
        counts = batch.get("request_counts")
        job.request_counts = counts if isinstance(counts, dict) else job.request_counts

    async def _collect(self, job: _Job, lines: bytes) -> None:
        for line in lines.splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            pending = job.pending.pop(str(record.get("custom_id")), None)
            if pending is not None:
                result = await self._result(job, pending, record.get("result") or {})
                job.answer(pending.index, result)
        for index in (pending.index for pending in job.pending.values()):
            job.answer(index, _failed(index, "api_error", "no result in the Message Batch"))
        job.pending.clear()
        job.pending_bytes = 0

    async def _result(self, job: _Job, pending: _Pending, result: dict[str, Any]) -> dict[str, Any]:
        index = pending.index
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            message = result["message"]
            await self._pipeline.remember(pending.call, message)
            answer = generate_answer(
                message, cached=False, offline=False, latency_ms=0.0, template=pending.template
            )
            return {"index": index, "ok": True, "result": answer}
        if kind == "errored":
            wrapper = result.get("error")
            wrapper = wrapper if isinstance(wrapper, dict) else {}
            inner = wrapper.get("error")
            inner = inner if isinstance(inner, dict) else wrapper
            return _failed(index, str(inner.get("type", "api_error")), str(inner.get("message")))
        return _failed(index, str(kind or "api_error"), f"the batch request was {kind}")

    def _end(self, job: _Job) -> None:
        job.status = "ended"
        job.duration_ms = round((time.perf_counter() - job.started) * 1000, 2)

    async def _request(self, job: _Job, method: str, path: str, body: bytes = b"") -> Reply:
        context = job.context
        reply = await self._pipeline.passthrough(
            method,
            path,
            body,
            context.creds,
            version=context.version,
            beta=context.beta,
            content_type="application/json" if body else None,
            stream=False,
        )
        if reply.status != 200:
            raise UpstreamRefused(reply.status, reply.body)
        return reply


def results_path(base_url: str, url: Any) -> str:
    """The target of a results_url on the configured upstream: under its scheme, host,
    port and path prefix, then a path that stays under /v1/ (upstream/paths.py). Anything
    else is refused, so the upstream key never goes to another host or path."""
    base = base_url.rstrip("/")
    if not isinstance(url, str) or not url.startswith(base + "/v1/"):
        raise UpstreamUnavailable("the Message Batch's results_url is not on the upstream")
    path, _, query = url[len(base) :].partition("?")
    try:
        return canonical_target(path.encode("utf-8"), query.encode("utf-8"))
    except UnsafePath:
        raise UpstreamUnavailable(
            "the Message Batch's results_url leaves the upstream's /v1/"
        ) from None


def _entry(custom_id: str, body: dict[str, Any]) -> bytes:
    """One `{"custom_id", "params"}` of the Message Batch, encoded on its own: an item
    orjson cannot encode (nested deeper than its limit once wrapped) fails alone."""
    try:
        return orjson.dumps({"custom_id": custom_id, "params": body})
    except orjson.JSONEncodeError as error:
        raise InvalidRequest(f"cannot be sent in a Message Batch: {error}") from None


def _name_and_version(template: Rendered | None) -> Rendered | None:
    """The template as the answer reports it; its rendered texts are already in the body."""
    if template is None:
        return None
    return Rendered(template.name, template.version, prompt="", system=None, model=None)


def _object(response: Reply) -> dict[str, Any]:
    value = json_object_or_none(response.body)
    if value is None:
        raise UpstreamUnavailable("the upstream's Message Batch answer is not a JSON object")
    return value


def _failed(index: int, type_: str, message: str) -> dict[str, Any]:
    return {"index": index, "ok": False, "error": {"type": type_, "message": message}}


def _view(job: _Job) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "mode": "async",
        "status": job.status,
        "upstream_batch_id": job.upstream_id,
        "request_counts": job.request_counts,
        "total": job.total,
        "created_at": job.created.isoformat().replace("+00:00", "Z"),
    }
    if job.status == "ended":
        results = [job.results[i] for i in sorted(job.results)]
        summary = summarize(results, job.started)
        if job.duration_ms is not None:
            summary["duration_ms"] = job.duration_ms
        view["results"] = results
        view["summary"] = summary
    return view
