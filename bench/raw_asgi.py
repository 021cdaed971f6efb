"""The floor for cache hits: a raw ASGI callable that answers every POST with a stored body.

It reads the request body to its end (as any server must), then answers 200 with the
bytes of `--body-file` as application/json with a content-length. No routing, no
parsing, no cache lookup. It is served by the same uvicorn options `promptrelay serve`
uses (promptrelay.server.options.uvicorn_options: uvloop, promptrelay's connection
protocol and limits), so a hit through promptrelay and this answer differ only in the
application's own work:

    python bench/raw_asgi.py --port 9003 --body-file /tmp/hit.json
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from promptrelay.server.options import uvicorn_options
from promptrelay.settings import load_settings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def make_app(body: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
    }
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body", False):
            pass
        await send(start)
        await send(answer)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True, help="the stored answer")
    args = parser.parse_args()
    settings = load_settings(host="127.0.0.1", port=args.port, log_level="warning")
    uvicorn.run(make_app(args.body_file.read_bytes()), **uvicorn_options(settings))


if __name__ == "__main__":
    main()
