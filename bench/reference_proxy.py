"""A minimal pass-through proxy: the floor promptrelay's miss path is measured against.

A plain ASGI callable on uvicorn + uvloop + httptools that forwards POST /v1/messages
to the upstream over one pooled client and copies status, content type and body back;
an event stream (text/event-stream) is copied chunk by chunk as it arrives. No cache,
no validation, no telemetry. The upstream client is chosen by name so that
bench/client_choice.py can compare aiohttp and httpx inside the same proxy; `--pool`
sets its connection limit (the bench raises it for 1,024 concurrent requests):

    python bench/reference_proxy.py --port 9001 --upstream http://127.0.0.1:9000
    python bench/reference_proxy.py --port 9002 --upstream ... --client httpx --pool 1100
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# (request body, forwarded headers, the ASGI send of the client's answer)
Forward = Callable[[bytes, dict[str, str], Send], Awaitable[None]]

_FORWARDED = (b"x-api-key", b"anthropic-version", b"content-type")
_SSE = "text/event-stream"


async def _aiohttp_client(
    upstream: str, pool: int
) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(base_url=upstream, connector=aiohttp.TCPConnector(limit=pool))

    async def forward(body: bytes, headers: dict[str, str], send: Send) -> None:
        async with session.post("/v1/messages", data=body, headers=headers) as response:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith(_SSE):
                await _respond(send, response.status, content_type, await response.read())
                return
            await _stream_start(send, response.status, content_type)
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return forward, session.close


async def _httpx_client(upstream: str, pool: int) -> tuple[Forward, Callable[[], Awaitable[None]]]:
    import httpx  # type: ignore[import-not-found, unused-ignore]  # bench-only, may be absent

    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    client = httpx.AsyncClient(base_url=upstream, limits=limits, timeout=60.0)

    async def forward(body: bytes, headers: dict[str, str], send: Send) -> None:
        request = client.build_request("POST", "/v1/messages", content=body, headers=headers)
        response = await client.send(request, stream=True)
        try:
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith(_SSE):
                await _respond(send, response.status_code, content_type, await response.aread())
                return
            await _stream_start(send, response.status_code, content_type)
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return forward, client.aclose


_CLIENTS = {"aiohttp": _aiohttp_client, "httpx": _httpx_client}


def make_app(
    upstream: str, client: str, pool: int = 100
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The proxy as an ASGI callable; its lifespan owns the upstream client."""
    state: dict[str, Forward] = {}

    async def lifespan(receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        state["forward"], close = await _CLIENTS[client](upstream, pool)
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
        await state["forward"](body, headers, send)

    return app


async def _stream_start(send: Send, status: int, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _respond(send: Send, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    parser.add_argument("--client", choices=sorted(_CLIENTS), default="aiohttp")
    parser.add_argument("--pool", type=int, default=100, help="upstream connection limit")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream.rstrip("/"), args.client, args.pool),
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
