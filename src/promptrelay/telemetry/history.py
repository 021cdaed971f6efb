"""History for trend analysis: fixed-size rings of sampled points, served as time series.

Two rings: 10 s resolution for an hour (360 points) and 1 min resolution for a day
(1,440 points). Each keeps the last sample that fell into a slot. A point is a tuple of
the `FIELDS` numbers, so a full day costs about 1,800 small tuples per process.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

__all__ = ["FIELDS", "History", "parse_window"]

FIELDS = (
    "rss_bytes",
    "memory_fraction",
    "cpu_percent",
    "loop_lag_ms",
    "requests_per_s",
    "error_rate",
    "p95_ms",
    "hit_ratio",
    "in_flight",
)

_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = 86400.0


def parse_window(text: str) -> float:
    """'90', '90s', '15m', '1h', '1d' -> seconds; ValueError naming the accepted forms."""
    match = _WINDOW.match(text.strip().lower())
    if match is None:
        raise ValueError("window: use seconds or a number with s, m, h or d (e.g. 15m, 1h)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_WINDOW:
        raise ValueError("window: must be more than 0 and at most 1d")
    return seconds


class _Ring:
    def __init__(self, resolution: float, size: int) -> None:
        self.resolution = resolution
        self.points: deque[tuple[float, tuple[float, ...]]] = deque(maxlen=size)

    def add(self, at: float, values: tuple[float, ...]) -> None:
        slot = at - at % self.resolution
        if self.points and self.points[-1][0] == slot:
            self.points[-1] = (slot, values)
        else:
            self.points.append((slot, values))


class History:
    def __init__(self) -> None:
        self.fine = _Ring(10.0, 360)
        self.coarse = _Ring(60.0, 1440)

    def add(self, at: float, values: tuple[float, ...]) -> None:
        if len(values) != len(FIELDS):
            raise ValueError(f"a history point has {len(FIELDS)} values")
        self.fine.add(at, values)
        self.coarse.add(at, values)

    def series(self, window: float, now: float) -> dict[str, Any]:
        """Points of the last `window` seconds, from the finest ring that covers it."""
        ring = self.fine if window <= 3600 else self.coarse
        since = now - window
        points = [(at, values) for at, values in ring.points if at >= since - ring.resolution]
        return {
            "window_s": window,
            "resolution_s": ring.resolution,
            "fields": ["t", *FIELDS],
            "points": [[round(at, 1), *values] for at, values in points],
        }
