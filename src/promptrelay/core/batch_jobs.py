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

Jobs are kept by a JobStore (core/batch_store.py): this process's memory when Redis is
disabled, else Redis, written before the answer goes out, so every instance answers a
poll. A job holds no credentials: it is visible only to the cache namespace (the hash of
the client key) that made it, and each poll asks the upstream with the poller's own
credentials (the same client key: its own Anthropic key in pass-through, else the
gateway's). A waiting item keeps the cache key its answer goes under, not its body.
Fetching an ended batch's results happens once, under the store's lock; the poller that
holds it stores the results in the job, and every instance then serves them (a poll
meanwhile answers the job as still in progress). Results are fetched only from the
configured upstream's origin, so our key never follows a results_url elsewhere.

Every Message Batches call is a pass-through of the pipeline: one attempt through the
circuit breaker, refused at once (503 + Retry-After) while it is open.

An item never fails another: a bad item, one whose entry cannot be encoded, or a bug
while preparing it, is that item's own error (as in sync mode).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from promptrelay.core.auth import Credentials
from promptrelay.core.batch import BatchContext, item_failure, prepare_item, summarize
from promptrelay.core.batch_store import Job, JobStore, JobsUnavailable, Waiting
from promptrelay.core.gateway import Reply
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
_PREFIX = "prbatch_"

# Parses one item like /api/generate (core.batch.prepare_item); raises for a bad one.
Preparer = Callable[[Any, BatchContext], Awaitable[Prepared]]


class UpstreamRefused(GatewayError):
    """The upstream answered a Message Batches call with an error; passed on as is."""

    def __init__(self, status: int, body: bytes) -> None:
        detail = upstream_error(status, body)
        super().__init__(f"Message Batches: {detail['message']}")
        self.status = status
        self.type = detail["type"]


class BatchJobs:
    def __init__(self, pipeline: Pipeline, store: JobStore, *, prepare: Preparer = prepare_item):
        self._pipeline = pipeline
        self._store = store
        self.prepare_item = prepare  # how an item becomes a call (a test swaps it)

    def kept(self) -> int | None:
        """Jobs kept in this process's memory; None when they are in Redis."""
        return self._store.kept()

    async def submit(self, items: list[Any], context: BatchContext) -> dict[str, Any]:
        if context.creds.upstream_key is None:
            raise OfflineUnsupported(
                'mode "async" needs an Anthropic key (ANTHROPIC_API_KEY, or the client\'s own '
                'key): the offline provider has no Message Batches; use mode "sync"'
            )
        self._store.check()  # Redis down: refused before a Message Batch is paid for
        job = Job(
            id=_PREFIX + secrets.token_hex(12),
            owner=context.creds.namespace,
            total=len(items),
            created=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            started=time.time(),
            version=context.version,
            beta=context.beta,
        )
        entries: list[bytes] = []
        for index, item in enumerate(items):
            try:
                entry = await self._prepare(job, index, item, context)
            except Exception as error:  # item_failure logs a bug: it costs this item only
                job.results[index] = item_failure(index, error)
                continue
            if entry is not None:
                entries.append(entry)
        if entries:
            await self._create_upstream(job, entries, context.creds)
        else:
            _end(job)
        await self._keep(job)
        return _view(job)

    async def status(self, job_id: str, context: BatchContext) -> dict[str, Any]:
        job = await self._store.get(job_id) if _is_job_id(job_id) else None
        if job is None or job.owner != context.creds.namespace:
            raise NotFound(f"no batch job {job_id!r} ({self._store.describe()})")
        if job.status != "ended":
            job = await self._refresh(job, context.creds)
        return _view(job)

    # -- submission ------------------------------------------------------------------

    async def _prepare(
        self, job: Job, index: int, item: Any, context: BatchContext
    ) -> bytes | None:
        """Answer the item from the cache (None), or make it waiting and return its
        Message Batch entry. Raises for a bad item (or a bug): its own error."""
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
                job.results[index] = {"index": index, "ok": True, "result": answer}
                return None
        custom_id = f"item-{index}"
        encoded = _entry(custom_id, call.body)
        key = self._pipeline.cache_key(call) if call.control.store else None
        template = prepared.template
        job.pending[custom_id] = Waiting(
            index,
            key,
            template.name if template is not None else None,
            template.version if template is not None else None,
        )
        return encoded

    async def _create_upstream(self, job: Job, entries: list[bytes], creds: Credentials) -> None:
        body = b'{"requests":[' + b",".join(entries) + b"]}"  # each entry encoded once
        batch = _object(await self._request(creds, job, "POST", _BATCHES, body))
        upstream_id = batch.get("id")
        if not is_plain_id(upstream_id):  # it becomes a path segment of every poll
            raise UpstreamUnavailable("the upstream's Message Batch id is not a plain id")
        job.upstream_id = upstream_id
        _update(job, batch)

    async def _keep(self, job: Job) -> None:
        try:
            await self._store.put(job)
        except JobsUnavailable as error:
            if job.upstream_id is None:
                raise
            raise JobsUnavailable(
                f"{error.message}; Message Batch {job.upstream_id} was created but its job "
                "could not be kept: submit again",
                retry_after=error.retry_after,
            ) from None

    # -- polling ---------------------------------------------------------------------

    async def _refresh(self, job: Job, creds: Credentials) -> Job:
        """The job after asking the upstream; once its batch ended, with its results (if
        this poller got the lock, or another stored them meanwhile)."""
        batch = _object(await self._request(creds, job, "GET", f"{_BATCHES}/{job.upstream_id}"))
        _update(job, batch)
        if batch.get("processing_status") != "ended":
            return job
        token = await self._store.lock(job.id)
        if token is None:  # another poller fetches the results: a later poll shows them
            return job
        try:
            latest = await self._store.get(job.id)
            if latest is not None and latest.status == "ended":
                return latest  # stored between our read and our lock
            path = results_path(self._pipeline.base_url, batch.get("results_url"))
            lines = (await self._request(creds, job, "GET", path)).body
            await self._collect(job, lines)
            _end(job)
            await self._store.put(job)
            return job
        finally:
            await self._store.unlock(job.id, token)

    async def _collect(self, job: Job, lines: bytes) -> None:
        for line in lines.splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            waiting = job.pending.pop(str(record.get("custom_id")), None)
            if waiting is not None:
                result = await self._result(waiting, record.get("result") or {})
                job.results[waiting.index] = result
        for index in (waiting.index for waiting in job.pending.values()):
            job.results[index] = _failed(index, "api_error", "no result in the Message Batch")
        job.pending.clear()

    async def _result(self, waiting: Waiting, result: dict[str, Any]) -> dict[str, Any]:
        index = waiting.index
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            message = result["message"]
            if waiting.key is not None:
                await self._pipeline.remember(waiting.key, message)
            answer = generate_answer(
                message, cached=False, offline=False, latency_ms=0.0, template=_template(waiting)
            )
            return {"index": index, "ok": True, "result": answer}
        if kind == "errored":
            wrapper = result.get("error")
            wrapper = wrapper if isinstance(wrapper, dict) else {}
            inner = wrapper.get("error")
            inner = inner if isinstance(inner, dict) else wrapper
            return _failed(index, str(inner.get("type", "api_error")), str(inner.get("message")))
        return _failed(index, str(kind or "api_error"), f"the batch request was {kind}")

    async def _request(
        self, creds: Credentials, job: Job, method: str, path: str, body: bytes = b""
    ) -> Reply:
        reply = await self._pipeline.passthrough(
            method,
            path,
            body,
            creds,
            version=job.version,
            beta=job.beta,
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


def _is_job_id(job_id: str) -> bool:
    return job_id.startswith(_PREFIX) and is_plain_id(job_id)


def _template(waiting: Waiting) -> Rendered | None:
    """The template as the answer reports it: its name and version."""
    if waiting.template is None or waiting.template_version is None:
        return None
    return Rendered(waiting.template, waiting.template_version, prompt="", system=None, model=None)


def _update(job: Job, batch: dict[str, Any]) -> None:
    status = str(batch.get("processing_status", job.status))
    if status != "ended":  # "ended" is ours to set, once the results are in
        job.status = status
    counts = batch.get("request_counts")
    job.request_counts = counts if isinstance(counts, dict) else job.request_counts


def _end(job: Job) -> None:
    job.status = "ended"
    job.duration_ms = round((time.time() - job.started) * 1000, 2)


def _object(response: Reply) -> dict[str, Any]:
    value = json_object_or_none(response.body)
    if value is None:
        raise UpstreamUnavailable("the upstream's Message Batch answer is not a JSON object")
    return value


def _failed(index: int, type_: str, message: str) -> dict[str, Any]:
    return {"index": index, "ok": False, "error": {"type": type_, "message": message}}


def _view(job: Job) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "mode": "async",
        "status": job.status,
        "upstream_batch_id": job.upstream_id,
        "request_counts": job.request_counts,
        "total": job.total,
        "created_at": job.created,
    }
    if job.status == "ended":
        results = [job.results[i] for i in sorted(job.results)]
        summary = summarize(results, time.perf_counter())
        summary["duration_ms"] = job.duration_ms
        view["results"] = results
        view["summary"] = summary
    return view
