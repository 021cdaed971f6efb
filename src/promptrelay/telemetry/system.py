"""What the process looks like from the inside: memory, CPU, loop lag, fds, GC.

`SystemProbe.sample()` reads the gauges (RSS, Python heap blocks, CPU % since the last
sample, open fds) and the accumulators fed in between: the event-loop lag measured by
`LoopLagProbe` (a task that asks to wake every `period` seconds and records how late it
woke) and GC collections and pause time from `gc.callbacks`. CPU % is of one core, so a
saturated single-threaded process reads ~100.

The memory limit the guard and the alerts measure against is `MEMORY_LIMIT_BYTES` when
set, else the cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), else the
machine's RAM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["GcWatch", "LoopLagProbe", "SystemProbe", "SystemSample", "memory_limit"]

_CGROUP_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)
_NO_LIMIT = 1 << 60  # cgroup v1 writes a huge number for "unlimited"


def memory_limit(
    configured: int | None, cgroup_files: tuple[Path, ...] = _CGROUP_FILES
) -> tuple[int, str]:
    """(bytes, source): source is "setting", "cgroup" or "total_ram"."""
    if configured is not None:
        return configured, "setting"
    for path in cgroup_files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < _NO_LIMIT:
            return int(text), "cgroup"
    return psutil.virtual_memory().total, "total_ram"


@dataclass(frozen=True, slots=True)
class SystemSample:
    rss_bytes: int
    memory_limit_bytes: int
    memory_limit_source: str
    heap_blocks: int  # sys.getallocatedblocks(): live Python objects' allocations
    gc_tracked_counts: tuple[int, int, int]  # gc.get_count(): pending per generation
    cpu_percent: float
    loop_lag_ms: float  # worst lag since the previous sample
    open_fds: int
    gc_collections: int
    gc_pause_seconds: float
    gc_last_pause_ms: float
    threads: int

    @property
    def memory_fraction(self) -> float:
        return self.rss_bytes / self.memory_limit_bytes if self.memory_limit_bytes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rss_bytes": self.rss_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "memory_limit_source": self.memory_limit_source,
            "memory_fraction": round(self.memory_fraction, 4),
            "heap_blocks": self.heap_blocks,
            "gc_pending": list(self.gc_tracked_counts),
            "cpu_percent": round(self.cpu_percent, 1),
            "loop_lag_ms": round(self.loop_lag_ms, 3),
            "open_fds": self.open_fds,
            "gc_collections": self.gc_collections,
            "gc_pause_seconds": round(self.gc_pause_seconds, 4),
            "gc_last_pause_ms": round(self.gc_last_pause_ms, 3),
            "threads": self.threads,
        }


class GcWatch:
    """Counts collections and their pause through gc.callbacks (install, then remove)."""

    def __init__(self) -> None:
        self.collections = 0
        self.by_generation = [0, 0, 0]
        self.pause_seconds = 0.0
        self.last_pause = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.last_pause = time.perf_counter() - self._started
        self.pause_seconds += self.last_pause
        self.collections += 1
        generation = info.get("generation", 0)
        if 0 <= generation < 3:
            self.by_generation[generation] += 1

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)


class LoopLagProbe:
    """A task that sleeps `period` and records how late it woke: the loop's lag."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.worst = 0.0  # since the last take()
        self.last = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            self.last = max(0.0, time.monotonic() - before - self.period)
            if self.last > self.worst:
                self.worst = self.last

    def take(self) -> float:
        """Worst lag (seconds) since the previous call."""
        worst, self.worst = self.worst, self.last
        return worst

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class SystemProbe:
    def __init__(self, configured_limit: int | None, lag: LoopLagProbe, gc_watch: GcWatch) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # first call starts the measurement
        self._limit = memory_limit(configured_limit)
        self._lag = lag
        self._gc = gc_watch

    def sample(self) -> SystemSample:
        process = self._process
        with process.oneshot():
            rss = process.memory_info().rss
            cpu = process.cpu_percent(None)
            try:
                fds = process.num_fds()
            except (AttributeError, psutil.Error):  # not on this platform
                fds = -1
            threads = process.num_threads()
        return SystemSample(
            rss_bytes=rss,
            memory_limit_bytes=self._limit[0],
            memory_limit_source=self._limit[1],
            heap_blocks=sys.getallocatedblocks(),
            gc_tracked_counts=gc.get_count(),
            cpu_percent=cpu,
            loop_lag_ms=self._lag.take() * 1000,
            open_fds=fds,
            gc_collections=self._gc.collections,
            gc_pause_seconds=self._gc.pause_seconds,
            gc_last_pause_ms=self._gc.last_pause * 1000,
            threads=threads,
        )
