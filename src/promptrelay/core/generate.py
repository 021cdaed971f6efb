"""/api/generate below HTTP, shared by the single route and every batch item.

    GenerateFront.prepare(raw)   parse; render the template, if named; resolve the model
                                 alias (before the cache key is computed)
    GenerateFront.call(...)      the Messages call it makes
    generate_answer(...)         the flat JSON a successful generate returns

so an item of `POST /api/generate/batch` (sync or async) behaves and answers exactly like
`POST /api/generate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from promptrelay.core.auth import Credentials
from promptrelay.core.cache_control import DEFAULT, NO_STORE, CacheControl
from promptrelay.core.gateway import MessagesCall
from promptrelay.core.providers import Providers
from promptrelay.core.request import json_object_or_none, parse_generate
from promptrelay.templates.render import Rendered
from promptrelay.templates.service import TemplateService

__all__ = ["GenerateFront", "Prepared", "generate_answer", "upstream_error"]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A generate request ready for the gateway: the Messages body to send, whether it
    may use the cache (`"cache": false` says no), and the template it came from."""

    body: dict[str, Any]
    use_cache: bool
    template: Rendered | None = None


class GenerateFront:
    def __init__(
        self, providers: Providers, templates: TemplateService, *, default_max_tokens: int
    ) -> None:
        self._providers = providers
        self._templates = templates
        self._default_max_tokens = default_max_tokens

    async def prepare(self, raw: bytes) -> Prepared:
        """Raises InvalidRequest (bad JSON or fields, template errors) or NotFound."""
        await self._providers.refresh()
        default_model = self._providers.default_model
        request = parse_generate(
            raw, default_model=default_model, default_max_tokens=self._default_max_tokens
        )
        body, rendered, named = request.body, None, request.template
        if named is not None:
            rendered = await self._templates.render(named.name, named.version, named.variables)
            body = rendered.messages_body(
                body, default_model=default_model, default_max_tokens=self._default_max_tokens
            )
        body["model"] = self._providers.resolve(body["model"])
        return Prepared(body, request.use_cache, rendered)

    def call(
        self,
        prepared: Prepared,
        creds: Credentials,
        *,
        version: str,
        beta: str | None = None,
        control: CacheControl = DEFAULT,
    ) -> MessagesCall:
        """The Messages call a prepared generate request makes."""
        body = prepared.body
        return MessagesCall(
            body=body,
            raw=orjson.dumps(body),
            stream=False,
            creds=creds,
            version=version,
            beta=beta,
            control=control if prepared.use_cache else NO_STORE,
            timeout=self._providers.timeout(str(body["model"])),
        )


def generate_answer(
    message: dict[str, Any],
    *,
    cached: bool,
    offline: bool,
    latency_ms: float,
    template: Rendered | None = None,
) -> dict[str, Any]:
    """The flat JSON n8n's HTTP Request node gets (it hides headers, so `cached` is here)."""
    answer = {
        "id": message.get("id"),
        "text": "".join(
            block.get("text", "")
            for block in message.get("content") or []
            if isinstance(block, dict) and block.get("type") == "text"
        ),
        "model": message.get("model"),
        "usage": message.get("usage"),
        "stop_reason": message.get("stop_reason"),
        "cached": cached,
        "offline": offline,
        "latency_ms": round(latency_ms, 2),
    }
    if template is not None:
        answer["template"] = template.name
        answer["template_version"] = template.version
    return answer


def upstream_error(status: int, body: bytes) -> dict[str, Any]:
    """A failed upstream answer as a batch item's `error`: type, message, status."""
    parsed = json_object_or_none(body)
    inner = parsed.get("error") if parsed is not None else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return {
            "type": str(inner.get("type", "api_error")),
            "message": inner["message"],
            "status": status,
        }
    return {"type": "api_error", "message": f"upstream answered {status}", "status": status}
