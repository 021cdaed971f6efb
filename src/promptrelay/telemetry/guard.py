"""The memory guard: under memory pressure, shed cache and collect garbage.

Pressure is RSS / memory limit, read once per sampling period. `GuardPolicy` (pure,
injected clock) decides; `MemoryGuard` performs and reports every action as a
`MemoryGuardActed` event:

    pressure >= GC_THRESHOLD       trim the memory tier by 25% and run gc.collect(),
                                   at most once per GC_MIN_INTERVAL (a full collection
                                   stalls the event loop)
    pressure >= GC_CRITICAL        aggressive mode: tighter gc thresholds (generation 0
                                   collected 4x as often), trims of 50%, at most once
                                   per GC_MIN_INTERVAL / 3
    aggressive and pressure < GC_THRESHOLD - hysteresis
                                   back to normal, the previous gc thresholds restored
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from promptrelay.core.events import EventBus, MemoryGuardActed

__all__ = ["GuardPolicy", "GuardStep", "MemoryGuard"]

log = logging.getLogger("promptrelay.telemetry")


@dataclass(frozen=True, slots=True)
class GuardStep:
    enter_aggressive: bool = False
    leave_aggressive: bool = False
    trim_fraction: float = 0.0  # 0: no trim
    collect: bool = False


class GuardPolicy:
    def __init__(
        self,
        *,
        threshold: float,
        critical: float,
        hysteresis: float = 0.05,
        min_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.critical = max(critical, threshold)
        self.hysteresis = hysteresis
        self.min_interval = min_interval
        self.aggressive = False
        self._clock = clock
        self._last_action: float | None = None

    def decide(self, pressure: float) -> GuardStep:
        now = self._clock()
        enter = not self.aggressive and pressure >= self.critical
        leave = self.aggressive and pressure < self.threshold - self.hysteresis
        if enter:
            self.aggressive = True
        if leave:
            self.aggressive = False
        if pressure < self.threshold:
            return GuardStep(leave_aggressive=leave)
        interval = self.min_interval / 3 if self.aggressive else self.min_interval
        if self._last_action is not None and now - self._last_action < interval and not enter:
            return GuardStep(enter_aggressive=enter)
        self._last_action = now
        return GuardStep(
            enter_aggressive=enter,
            trim_fraction=0.5 if self.aggressive else 0.25,
            collect=True,
        )


class MemoryGuard:
    """Performs the policy's steps. `trim(fraction) -> bytes freed` sheds cache."""

    def __init__(self, policy: GuardPolicy, trim: Callable[[float], int], events: EventBus) -> None:
        self.policy = policy
        self._trim = trim
        self._events = events
        self._saved_thresholds: tuple[int, int, int] | None = None

    def check(self, pressure: float) -> GuardStep:
        step = self.policy.decide(pressure)
        if step.enter_aggressive:
            self._saved_thresholds = gc.get_threshold()
            first, second, third = self._saved_thresholds
            gc.set_threshold(max(100, first // 4), max(2, second // 2), max(2, third // 2))
            log.warning("memory guard: aggressive mode at %.0f%% of the limit", pressure * 100)
            self._events.emit(MemoryGuardActed("aggressive_on", pressure))
        if step.leave_aggressive:
            self._restore()
            log.info("memory guard: pressure %.0f%%, back to normal", pressure * 100)
            self._events.emit(MemoryGuardActed("aggressive_off", pressure))
        if step.trim_fraction:
            freed = self._trim(step.trim_fraction)
            self._events.emit(MemoryGuardActed("trim", pressure, freed_bytes=freed))
        if step.collect:
            started = time.perf_counter()
            gc.collect()
            took = time.perf_counter() - started
            log.info(
                "memory guard: pressure %.0f%%, trimmed and collected in %.1f ms",
                pressure * 100,
                took * 1000,
            )
            self._events.emit(MemoryGuardActed("collect", pressure, seconds=took))
        return step

    def _restore(self) -> None:
        if self._saved_thresholds is not None:
            gc.set_threshold(*self._saved_thresholds)
            self._saved_thresholds = None

    def close(self) -> None:
        """Leave the process's gc thresholds as they were before aggressive mode."""
        self._restore()
        self.policy.aggressive = False
