"""The ASGI lifespan: a failed start-up stops what it had started."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from promptrelay.app import build_app
from promptrelay.settings import Settings


async def test_a_failed_startup_reports_and_stops_what_it_started(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("colour: blue\n")  # invalid: start-up fails after the cache started
    app = build_app(Settings(providers_file=str(path)))
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: list[dict[str, Any]] = []
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: MutableMapping[str, Any]) -> None:
        outbox.append(dict(message))

    before = {task.get_name() for task in asyncio.all_tasks()}
    await app({"type": "lifespan"}, inbox.get, send)
    await asyncio.sleep(0)
    left = {task.get_name() for task in asyncio.all_tasks()} - before
    assert [m["type"] for m in outbox] == ["lifespan.startup.failed"]
    assert "colour: unknown field" in outbox[0]["message"]
    assert app.runtime is None
    assert not [name for name in left if name.startswith("promptrelay")], left
