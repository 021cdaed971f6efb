"""The request path below the HTTP layer: one object, built once, called per request.

    api (parse, auth)  ->  Gateway.messages(call)  ->  provider (offline | upstream)

Later stages (cache, coalescer, retries, breaker) slot in here, between the HTTP layer
and the provider, so the HTTP handlers stay free of policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptrelay.core.auth import Credentials, KeyMode
from promptrelay.settings import Settings
from promptrelay.upstream.client import UpstreamClient, UpstreamResponse
from promptrelay.upstream.offline import OfflineProvider

__all__ = ["Gateway", "MessagesCall"]


@dataclass(slots=True)
class MessagesCall:
    """One Messages API call as the pipeline sees it."""

    body: dict[str, Any]
    raw: bytes  # the body as the client sent it; forwarded unchanged when possible
    stream: bool
    creds: Credentials
    version: str
    beta: str | None = None


class Gateway:
    def __init__(
        self, settings: Settings, upstream: UpstreamClient, offline: OfflineProvider
    ) -> None:
        self._settings = settings
        self._upstream = upstream
        self._offline = offline
        self.served_by_mode: dict[str, int] = {mode.value: 0 for mode in KeyMode}

    @property
    def upstream(self) -> UpstreamClient:
        return self._upstream

    def upstream_headers(
        self, key: str, version: str, beta: str | None, content_type: str | None
    ) -> dict[str, str]:
        headers = {"x-api-key": key, "anthropic-version": version}
        if beta:
            headers["anthropic-beta"] = beta
        if content_type:
            headers["content-type"] = content_type
        return headers

    async def messages(self, call: MessagesCall) -> UpstreamResponse:
        self.served_by_mode[call.creds.mode.value] += 1
        if call.creds.upstream_key is None:
            return self._offline.messages(call.body, call.raw, stream=call.stream)
        headers = self.upstream_headers(
            call.creds.upstream_key, call.version, call.beta, "application/json"
        )
        return await self._upstream.request(
            "POST", "/v1/messages", headers=headers, body=call.raw, stream=call.stream
        )

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        creds: Credentials,
        *,
        version: str,
        beta: str | None,
        content_type: str | None,
    ) -> UpstreamResponse:
        """Any other /v1 route, passed through with the same key rules."""
        self.served_by_mode[creds.mode.value] += 1
        if creds.upstream_key is None:
            return self._offline.other(method, path, body)
        headers = self.upstream_headers(creds.upstream_key, version, beta, content_type)
        target = f"{path}?{query}" if query else path
        return await self._upstream.request(
            method, target, headers=headers, body=body or None, stream=True
        )
