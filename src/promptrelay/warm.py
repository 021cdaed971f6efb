"""`promptrelay cache warm FILE.jsonl`: send a file of requests to /api/cache/warm.

The file goes in chunks; each chunk's answer is NDJSON, a line per request as it
finishes, so the progress bar moves per request, not per chunk.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import Progress

from promptrelay.admin_client import admin_headers

__all__ = ["warm_file"]


def _parse(lines: list[str], console: Console) -> list[dict[str, Any]] | None:
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            console.print(f"[red]line {number}: not JSON ({error})")
            return None
        if not isinstance(item, dict):
            console.print(f"[red]line {number}: must be a JSON object (a Messages API body)")
            return None
        requests.append(item)
    return requests


async def warm_file(
    lines: list[str],
    *,
    url: str,
    admin_key: str | None,
    client_key: str | None,
    concurrency: int,
    chunk: int,
) -> int:
    """Returns the number of requests that failed (or all of them on a bad file)."""
    console = Console(stderr=True)
    requests = _parse(lines, console)
    if requests is None:
        return max(1, len(lines))
    headers = {**admin_headers(admin_key), "accept": "application/x-ndjson"}
    totals = {"stored": 0, "already_cached": 0, "failed": 0}
    async with aiohttp.ClientSession(headers=headers) as session:
        with Progress(console=console) as progress:
            task = progress.add_task("warming", total=len(requests))
            for start in range(0, len(requests), chunk):
                body: dict[str, Any] = {
                    "requests": requests[start : start + chunk],
                    "concurrency": concurrency,
                }
                if client_key:
                    body["client_key"] = client_key
                async with session.post(f"{url}/api/cache/warm", json=body) as response:
                    if response.status != 200:
                        answer = await response.json(content_type=None)
                        message = answer.get("error", {}).get("message", answer)
                        console.print(f"[red]{response.status}: {message}")
                        return len(requests) - start + totals["failed"]
                    async for line in response.content:
                        item = orjson.loads(line)
                        if item.get("done"):
                            for name in totals:
                                totals[name] += item[name]
                            continue
                        if not item["ok"]:
                            console.print(f"request {start + item['index'] + 1}: {item['error']}")
                        progress.advance(task, 1)
    console.print(
        f"stored {totals['stored']}, already cached {totals['already_cached']}, "
        f"failed {totals['failed']}"
    )
    return totals["failed"]
