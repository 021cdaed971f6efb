"""A minimal pass-through proxy: the floor promptrelay's miss path is measured against.

A plain ASGI callable on uvicorn + uvloop + httptools that forwards POST /v1/messages
to the upstream over one pooled client and copies status, content type and body back.
No cache, no validation, no telemetry. The upstream client is chosen by name so that
bench/client_choice.py can compare aiohttp and httpx inside the same proxy:

    python bench/reference_proxy.py --port 9001 --upstream http://127.0.0.1:9000
    python bench/reference_proxy.py --port 9002 --upstream ... --client httpx
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Forward = Callable[[bytes, dict[str, str]], Awaitable[tuple[int, str, bytes]]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_FORWARDED = (b"x-api-key", b"anthropic-version", b"content-type")
_POOL_SIZE = 100


async def _aiohttp_client(upstream: str) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        base_url=upstream, connector=aiohttp.TCPConnector(limit=_POOL_SIZE)
    )

    async def forward(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        async with session.post("/v1/messages", data=body, headers=headers) as response:
            return response.status, response.content_type, await response.read()

    return forward, session.close


async def _httpx_client(upstream: str) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    import httpx  # type: ignore[import-not-found, unused-ignore]  # bench-only, may be absent

    limits = httpx.Limits(max_connections=_POOL_SIZE, max_keepalive_connections=_POOL_SIZE)
    client = httpx.AsyncClient(base_url=upstream, limits=limits, timeout=60.0)

    async def forward(body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        response = await client.post("/v1/messages", content=body, headers=headers)
        return response.status_code, response.headers.get("content-type", ""), response.content

    return forward, client.aclose


_CLIENTS = {"aiohttp": _aiohttp_client, "httpx": _httpx_client}


def make_app(upstream: str, client: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The proxy as an ASGI callable; its lifespan owns the upstream client."""
    state: dict[str, Forward] = {}

    async def lifespan(receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        state["forward"], close = await _CLIENTS[client](upstream)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await close()
        await send({"type": "lifespan.shutdown.complete"})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["path"] != "/v1/messages" or scope["method"] != "POST":
            await _respond(send, 404, "application/json", b'{"error":"not found"}')
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARDED}
        status, content_type, payload = await state["forward"](body, headers)
        await _respond(send, status, content_type, payload)

    return app


async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument("--client", choices=sorted(_CLIENTS), default="aiohttp")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream.rstrip("/"), args.client),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
