"""Submitting and polling async batch jobs over HTTP, as the tests of several instances do."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

__all__ = ["poll", "results_fetches", "submit"]


async def submit(
    session: aiohttp.ClientSession,
    url: str,
    requests: list[Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    body = {"requests": requests, "mode": "async"}
    async with session.post(f"{url}/api/generate/batch", json=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def poll(
    session: aiohttp.ClientSession,
    url: str,
    job_id: str,
    headers: dict[str, str] | None = None,
    *,
    tries: int = 200,
) -> tuple[list[str], dict[str, Any]]:
    """GET the job until it has ended; the statuses seen, and its last view."""
    seen: list[str] = []
    for _ in range(tries):
        async with session.get(f"{url}/api/batches/{job_id}", headers=headers) as reply:
            assert reply.status == 200, await reply.text()
            view: dict[str, Any] = await reply.json()
        seen.append(view["status"])
        if view["status"] == "ended":
            return seen, view
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never ended: {seen[-3:]}")


def results_fetches(stats: dict[str, Any]) -> int:
    """GETs of a Message Batch's results the fake upstream answered."""
    return sum(n for path, n in stats["by_path"].items() if path.endswith("/results"))
