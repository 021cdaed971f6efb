"""Stopping background tasks reliably.

redis-py on Python 3.11 can swallow a cancellation (``asyncio.wait_for`` around a socket
write that completes in the same loop iteration), so a task cancelled once may keep
running. ``stop_tasks`` cancels until the tasks are really done, without ever
suppressing a cancellation aimed at the caller itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["consume_outcome", "stop_tasks"]


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]], *, rounds: int = 20) -> None:
    pending = [task for task in tasks if not task.done()]
    for _ in range(rounds):
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.25)
        pending = [task for task in pending if not task.done()]


def consume_outcome(task: asyncio.Future[Any]) -> None:
    """Done-callback for abandoned tasks: fetch the exception so asyncio does not log it."""
    if not task.cancelled():
        task.exception()
