"""What the micro-batcher did: groups flushed, their sizes and waits, from BatchFlushed."""

from __future__ import annotations

from typing import Any

from promptrelay.core.events import BatchFlushed

__all__ = ["BatchStats"]


class BatchStats:
    def __init__(self) -> None:
        self.groups = 0
        self.items = 0
        self.max_size = 0
        self.max_waited_ms = 0.0
        self.sizes: dict[int, int] = {}  # group size -> how many groups had it
        self.last: BatchFlushed | None = None

    def __call__(self, event: BatchFlushed) -> None:
        self.groups += 1
        self.items += event.size
        self.max_size = max(self.max_size, event.size)
        self.max_waited_ms = max(self.max_waited_ms, event.waited_ms)
        self.sizes[event.size] = self.sizes.get(event.size, 0) + 1
        self.last = event

    def snapshot(self) -> dict[str, Any]:
        last = self.last
        return {
            "groups": self.groups,
            "items": self.items,
            "mean_size": round(self.items / self.groups, 2) if self.groups else 0.0,
            "max_size": self.max_size,
            "max_waited_ms": round(self.max_waited_ms, 3),
            "sizes": {str(size): n for size, n in sorted(self.sizes.items())},
            "last": None
            if last is None
            else {"model": last.model, "size": last.size, "waited_ms": last.waited_ms},
        }
