"""The ASGI lifespan: a failed start-up stops what it had started."""

from __future__ import annotations

import asyncio
import gc
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


async def test_before_start_up_every_http_request_is_a_503_in_the_envelope() -> None:
    app = build_app(Settings())  # the lifespan never ran: no runtime, no management app
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    for path in ("/api/health", "/v1/messages"):
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "headers": []}
        await app(scope, receive, send)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [503, 503]
    assert all(b"has not started" in m["body"] for m in sent if m["type"] == "http.response.body")


async def _start_and_stop(app: Any) -> list[str]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            sent.append(f"young={gc.get_threshold()[0]}")
            await inbox.put({"type": "lifespan.shutdown"})

    await inbox.put({"type": "lifespan.startup"})
    await app({"type": "lifespan"}, inbox.get, send)
    return sent


async def test_a_serve_process_sets_the_young_threshold_after_start_up() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, saved[1], saved[2])
        own = build_app(Settings(redis_enabled=False, gc_young_threshold=12_345), own_process=True)
        assert "young=12345" in await _start_and_stop(own)
        assert gc.get_threshold()[1:] == saved[1:]
        gc.set_threshold(700, saved[1], saved[2])
        kept = build_app(Settings(redis_enabled=False, gc_young_threshold=0), own_process=True)
        assert "young=700" in await _start_and_stop(kept)
        embedded = build_app(Settings(redis_enabled=False, gc_young_threshold=12_345))
        assert "young=700" in await _start_and_stop(embedded)  # not its process to tune
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
