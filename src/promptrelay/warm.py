"""`promptrelay cache warm FILE.jsonl`: send a file of requests to /api/cache/warm."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import Progress

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
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    totals = {"stored": 0, "already_cached": 0, "failed": 0}
    async with aiohttp.ClientSession(headers=headers) as session:
        with Progress(console=console) as progress:
            task = progress.add_task("warming", total=len(requests))
            for start in range(0, len(requests), chunk):
                batch = requests[start : start + chunk]
                body: dict[str, Any] = {"requests": batch, "concurrency": concurrency}
                if client_key:
                    body["client_key"] = client_key
                async with session.post(f"{url}/api/cache/warm", json=body) as response:
                    answer = await response.json(content_type=None)
                if response.status != 200:
                    message = answer.get("error", {}).get("message", answer)
                    console.print(f"[red]{response.status}: {message}")
                    return len(requests) - start + totals["failed"]
                for name in totals:
                    totals[name] += answer[name]
                for item in answer["results"]:
                    if not item["ok"]:
                        console.print(f"request {start + item['index'] + 1}: {item['error']}")
                progress.advance(task, len(batch))
    console.print(
        f"stored {totals['stored']}, already cached {totals['already_cached']}, "
        f"failed {totals['failed']}"
    )
    return totals["failed"]
