"""Where async batch jobs (core/batch_jobs.py) are kept: this process, or Redis.

    store = MemoryJobs(max_jobs=1000, max_bytes=64 << 20)    # Redis disabled
    store = RedisJobs(redis_tier, ttl=172800, max_bytes=16 << 20, lock_ttl=60.0)
    await store.put(job)             # Redis: written before the caller answers
    job = await store.get(job_id)    # None: unknown, forgotten or expired
    token = await store.lock(job_id) # None: another poller fetches its results
    await store.unlock(job_id, token)

A job is plain data (``Job``), the same in both stores, and holds no credentials: its
owner is the namespace (a hash) of the client key that created it, and an item waiting
for its result keeps the cache key its answer goes under (not its body) and its
template's name and version.

Redis: one key per job, ``promptrelay:batch:{<job id>}``, its JSON with a TTL
(BATCH_JOBS_TTL, renewed by every write), at most BATCH_JOB_MAX_BYTES: results that
would push it over are replaced, largest first, by an error saying so (a succeeded
answer is still in the cache). The results lock is ``promptrelay:batch:{<job id>}:lock``
(the same hash tag: one slot), taken with SET NX PX and a random token, released by a
one-key compare-and-delete script. Every call goes through the cache tier's gate; when
Redis cannot answer (the tier is down, or the job's slot is failing over) the caller
gets JobsUnavailable: 503 with Retry-After.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from redis.asyncio import Redis, RedisCluster

from promptrelay.errors import GatewayError, RedisUnavailable

if TYPE_CHECKING:
    from promptrelay.settings import Settings

__all__ = [
    "Job",
    "JobStore",
    "JobsUnavailable",
    "MemoryJobs",
    "RedisJobs",
    "Waiting",
    "job_store",
]

log = logging.getLogger("promptrelay.batch")
_T = TypeVar("_T")

_PREFIX = "promptrelay:batch:"
_RETRY_AFTER = 2.0  # seconds: about a replica's promotion with a short cluster-node-timeout
_THROUGHPUT = 8 << 20  # bytes/s assumed when sizing a large record's time budget
# Seconds one instance holds a job's results fetch; a fetch that outlives it may be
# repeated by another instance, which is harmless (the same results are stored).
_RESULTS_LOCK = 60.0
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class JobsUnavailable(GatewayError):
    """Redis, where async jobs are kept, cannot answer now; try again shortly."""

    status = 503
    type = "api_error"


@dataclass(frozen=True, slots=True)
class Waiting:
    """An item sent in the Message Batch, waiting for its result."""

    index: int
    key: str | None  # the cache key its answer is stored under; None: "cache": false
    template: str | None = None  # name and version, reported with its answer
    template_version: int | None = None


@dataclass(slots=True)
class Job:
    id: str
    owner: str  # namespace of the client key that created it (a hash, never the key)
    total: int
    created: str  # RFC 3339
    started: float  # wall clock, for summary.duration_ms
    version: str | None  # anthropic-version and -beta as the creator sent them
    beta: str | None
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, Waiting] = field(default_factory=dict)  # by custom_id
    upstream_id: str | None = None
    status: str = "in_progress"
    request_counts: dict[str, Any] | None = None
    duration_ms: float | None = None

    def encode(self) -> bytes:
        data = asdict(self)
        data["results"] = [self.results[i] for i in sorted(self.results)]
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes | str) -> Job:
        data = orjson.loads(raw)
        data["results"] = {int(r["index"]): r for r in data["results"]}
        data["pending"] = {cid: Waiting(**w) for cid, w in data["pending"].items()}
        return cls(**data)


class JobStore(Protocol):
    def describe(self) -> str:
        """How long jobs are kept, for a 404's message."""
        ...

    def kept(self) -> int | None:
        """Jobs kept, when this process can tell (memory only)."""
        ...

    def check(self) -> None:
        """Raise JobsUnavailable when a job could not be kept now."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def put(self, job: Job) -> None: ...

    async def lock(self, job_id: str) -> str | None: ...

    async def unlock(self, job_id: str, token: str) -> None: ...


class MemoryJobs:
    """This process's memory: at most ``max_jobs`` jobs of ``max_bytes`` (their encoded
    size) together; the oldest are forgotten first, never the one just written."""

    def __init__(self, *, max_jobs: int, max_bytes: int) -> None:
        self._max = max_jobs
        self._max_bytes = max_bytes
        self._jobs: OrderedDict[str, tuple[Job, int]] = OrderedDict()
        self._locked: set[str] = set()

    def describe(self) -> str:
        return (
            f"jobs are kept in memory, at most {self._max} (BATCH_JOBS_MAX) and "
            f"{self._max_bytes} bytes (BATCH_JOBS_MAX_BYTES); the oldest are forgotten first"
        )

    def kept(self) -> int:
        return len(self._jobs)

    def check(self) -> None:
        return None

    async def get(self, job_id: str) -> Job | None:
        kept = self._jobs.get(job_id)
        return None if kept is None else kept[0]

    async def put(self, job: Job) -> None:
        self._jobs[job.id] = (job, len(job.encode()))
        total = sum(size for _, size in self._jobs.values())
        for job_id in list(self._jobs):
            if len(self._jobs) <= self._max and total <= self._max_bytes:
                return
            if job_id != job.id:
                total -= self._jobs.pop(job_id)[1]

    async def lock(self, job_id: str) -> str | None:
        if job_id in self._locked:
            return None
        self._locked.add(job_id)
        return job_id

    async def unlock(self, job_id: str, token: str) -> None:
        self._locked.discard(job_id)


class Runner(Protocol):
    """The cache tier's gate (cache/redis.py RedisTier.run): RedisUnavailable on failure."""

    @property
    def is_up(self) -> bool: ...

    @property
    def budget(self) -> float: ...

    async def run(
        self, call: Callable[[Redis | RedisCluster], Awaitable[_T]], *, budget: float | None = None
    ) -> _T: ...


class RedisJobs:
    """Jobs in Redis, shared by every instance; see the module docstring."""

    def __init__(self, redis: Runner, *, ttl: int, max_bytes: int, lock_ttl: float) -> None:
        self._redis = redis
        self._ttl_ms = ttl * 1000
        self._max_bytes = max_bytes
        self._lock_ms = int(lock_ttl * 1000)

    def describe(self) -> str:
        return f"jobs are kept in Redis for {self._ttl_ms // 1000} s (BATCH_JOBS_TTL)"

    def kept(self) -> None:
        return None

    def check(self) -> None:
        """Raise JobsUnavailable at once while the tier is down (before paying for a batch)."""
        if not self._redis.is_up:
            raise JobsUnavailable(
                "async batch jobs are kept in Redis, which is unreachable now",
                retry_after=_RETRY_AFTER,
            )

    async def get(self, job_id: str) -> Job | None:
        budget = self._redis.budget + self._max_bytes / _THROUGHPUT
        raw = await self._run(lambda r: r.get(_key(job_id)), budget)
        if raw is None:
            return None
        try:
            return Job.decode(raw)
        except (ValueError, TypeError, KeyError, AttributeError):  # another version's record
            log.warning("batch job %s: its record in Redis is unreadable", job_id)
            return None

    async def put(self, job: Job) -> None:
        raw = _fit(job, self._max_bytes)
        budget = self._redis.budget + len(raw) / _THROUGHPUT
        await self._run(lambda r: r.set(_key(job.id), raw, px=self._ttl_ms), budget)

    async def lock(self, job_id: str) -> str | None:
        token = secrets.token_hex(16)
        key = _key(job_id) + ":lock"
        won = await self._run(lambda r: r.set(key, token, nx=True, px=self._lock_ms))
        return token if won else None

    async def unlock(self, job_id: str, token: str) -> None:
        key = _key(job_id) + ":lock"
        try:  # if this fails the lock expires by itself
            await self._run(lambda r: r.eval(_RELEASE, 1, key, token))
        except JobsUnavailable:
            log.warning("batch job %s: results lock not released; it expires", job_id)

    async def _run(
        self, call: Callable[[Redis | RedisCluster], Awaitable[_T]], budget: float | None = None
    ) -> _T:
        try:
            return await self._redis.run(call, budget=budget)
        except RedisUnavailable:
            raise JobsUnavailable(
                "async batch jobs are kept in Redis, which did not answer (a failover?)",
                retry_after=_RETRY_AFTER,
            ) from None


def job_store(settings: Settings, redis: Runner | None) -> JobStore:
    """Redis when it is enabled (``redis``: the cache tier), else this process's memory."""
    if redis is None:
        return MemoryJobs(max_jobs=settings.batch_jobs_max, max_bytes=settings.batch_jobs_max_bytes)
    return RedisJobs(
        redis,
        ttl=settings.batch_jobs_ttl,
        max_bytes=settings.batch_job_max_bytes,
        lock_ttl=_RESULTS_LOCK,
    )


def _key(job_id: str) -> str:
    return f"{_PREFIX}{{{job_id}}}"


def _fit(job: Job, max_bytes: int) -> bytes:
    """The job's record, at most ``max_bytes`` if its results allow: the largest results
    are replaced by a short error until it fits (waiting items are never dropped)."""
    raw = job.encode()
    if len(raw) <= max_bytes:
        return raw
    sizes = sorted(((len(orjson.dumps(r)), i) for i, r in job.results.items()), reverse=True)
    excess = len(raw) - max_bytes
    for size, index in sizes:
        if excess <= 0:
            break
        message = (
            f"this result ({size} bytes) was not kept: the job would exceed "
            f"BATCH_JOB_MAX_BYTES ({max_bytes}); a succeeded answer was stored in the "
            'cache (unless its item said "cache": false): send the item to /api/generate'
        )
        stub = {
            "index": index,
            "ok": False,
            "error": {"type": "request_too_large", "message": message},
        }
        job.results[index] = stub
        excess -= size - len(orjson.dumps(stub))
    return job.encode()
