"""The one request path every face calls: `prepare` an ask, then `run` the call.

    face (decode wire format) -> Ask
        prepare(ask)   credentials + namespace (already in the ask), default model (the
                       providers file's when it sets one), default max_tokens, template
                       render, model alias, PROMPT_CACHE_AUTO's breakpoint, cache
                       control (header or `"cache": false`), API version default,
                       per-model timeout                        -> Prepared(call, ...)
        run(call)      cache lookup (one CacheLookup event), coalescer, retries +
                       breaker, store, events; streamed or not  -> Reply
    face (encode Reply into its wire format)

Faces: /v1/messages and /api/generate (api/hot.py), sync batch items (core/batch.py),
async Message Batches (core/batch_jobs.py), cache warm (api/admin.py) and the template
dry run (api/templates.py). None of them touches the cache tiers, the upstream client or
the breaker: `lookup` and `remember` serve a face that fetches answers another way (a
Message Batch), `passthrough` every other upstream call (breaker-counted, no retries).

The hit path stays cheap: a /v1/messages body whose model is no alias is forwarded as
the client's own bytes (no re-encoding), and prepare costs a dict lookup or two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from promptrelay.cache.base import CacheEntry
from promptrelay.core.auth import Credentials
from promptrelay.core.cache_control import DEFAULT, NO_STORE, CacheControl
from promptrelay.core.gateway import Gateway, MessagesCall, Reply
from promptrelay.core.prompt_cache import auto_breakpoint
from promptrelay.core.providers import Providers
from promptrelay.core.request import TemplateCall
from promptrelay.errors import InvalidRequest
from promptrelay.templates.render import Rendered
from promptrelay.templates.service import TemplateService

__all__ = ["Ask", "Pipeline", "Prepared"]


@dataclass(slots=True)
class Ask:
    """What a face decoded from its wire format, before any default applies.

    `body` holds the Messages fields the caller set: `model` and `max_tokens` may be
    missing (the defaults apply), `messages` too when a template supplies them. `raw` is
    the client's own encoding of `body`: forwarded as is while nothing in it changes.
    """

    creds: Credentials
    body: dict[str, Any]
    raw: bytes | None = None
    version: str | None = None  # anthropic-version as sent; None: ANTHROPIC_VERSION
    beta: str | None = None
    control: CacheControl = DEFAULT  # from Cache-Control
    use_cache: bool = True  # a body flag (`"cache": false` means NO_STORE)
    template: TemplateCall | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """The one internal call an ask became, and the template it was rendered from."""

    call: MessagesCall
    template: Rendered | None = None


class Pipeline:
    """Built once in the lifespan; see the module docstring for the two steps."""

    def __init__(
        self,
        gateway: Gateway,
        providers: Providers,
        templates: TemplateService,
        *,
        default_version: str,
        default_max_tokens: int,
        prompt_cache_auto: bool = False,
    ) -> None:
        self._gateway = gateway
        self._auto_breakpoint = prompt_cache_auto
        self._providers = providers
        self._templates = templates
        self._version = default_version
        self._max_tokens = default_max_tokens
        self.served_by_mode = gateway.served_by_mode
        # run(call): the gateway's own method, not a coroutine layer around it
        self.run: Callable[[MessagesCall], Awaitable[Reply]] = gateway.messages

    @property
    def base_url(self) -> str:
        """The configured upstream: the only origin a Message Batch result is read from."""
        return self._gateway.base_url

    def in_flight(self) -> int:
        return self._gateway.in_flight()

    async def prepare(self, ask: Ask) -> Prepared:
        """Raises InvalidRequest (a template's errors, an unencodable body) or NotFound."""
        providers = self._providers
        await providers.refresh()
        body, rendered = ask.body, None
        if ask.template is not None:
            named = ask.template
            rendered = await self._templates.render(named.name, named.version, named.variables)
            body = rendered.messages_body(
                body,
                default_model=providers.default_model,
                default_max_tokens=self._max_tokens,
            )
        elif "model" not in body or "max_tokens" not in body:
            body = {"model": providers.default_model, "max_tokens": self._max_tokens, **body}
        model = providers.resolve(str(body["model"]))
        if self._auto_breakpoint:
            body = auto_breakpoint(body, model)
        raw = ask.raw
        if raw is None or body is not ask.body or model != body["model"]:
            # an alias: the resolved model goes upstream and into the cache key
            body = {**body, "model": model}
            raw = _encode(body)
        call = MessagesCall(
            body=body,
            raw=raw,
            stream=body.get("stream") is True,
            creds=ask.creds,
            version=ask.version or self._version,
            beta=ask.beta,
            control=ask.control if ask.use_cache else NO_STORE,
            timeout=providers.timeout(model),
        )
        return Prepared(call, rendered)

    def cache_key(self, call: MessagesCall) -> str:
        return self._gateway.key_for(call)

    async def lookup(self, call: MessagesCall) -> CacheEntry | None:
        """The stored answer `run(call)` would give, or None; counted like run's lookup.
        None too when the call's cache control skips the lookup."""
        return await self._gateway.lookup(call)

    async def remember(self, key: str, message: dict[str, Any]) -> bool:
        """Store a live answer fetched outside `run` under `key` (its call's cache_key)."""
        return await self._gateway.remember(key, message)

    async def passthrough(
        self,
        method: str,
        target: str,
        body: bytes,
        creds: Credentials,
        *,
        version: str | None,
        beta: str | None,
        content_type: str | None,
        stream: bool = True,
    ) -> Reply:
        """Any other /v1 call, through the breaker; never retried (see Gateway.forward)."""
        return await self._gateway.forward(
            method,
            target,
            body,
            creds,
            version=version or self._version,
            beta=beta,
            content_type=content_type,
            stream=stream,
        )


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError as error:
        raise InvalidRequest(f"request is not JSON-serialisable: {error}") from None
