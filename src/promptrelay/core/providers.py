"""Provider configuration from PROVIDERS_FILE: model aliases, default model, prices, timeouts.

    # providers.yaml
    default_model: smart            # an alias or a model id
    aliases: {fast: claude-haiku-4-5, smart: claude-sonnet-4-6}
    timeout: 300                    # seconds for one upstream call, every model
    models:
      claude-sonnet-4-6: {input_per_mtok: 3.0, output_per_mtok: 15.0, timeout: 120}

    providers = Providers.from_settings(settings, cache)
    await providers.start()                   # reads and validates: ProviderConfigError
    await providers.refresh()                 # per request: one lookup unless it expired
    providers.resolve("fast")                 # -> "claude-haiku-4-5"
    providers.price("claude-sonnet-4-6")      # -> Price(3.0, 15.0) or None
    await providers.reload()                  # admin route: re-read the file now

The parsed file lives here; a marker in this process's memory tier (content type
`provider_config`, its TTL) says when to read the file again, so an edited file takes
effect within the TTL even without a reload. The file is read off the event loop. A reload
re-reads it and drops the marker in every process (cache pub/sub), which then read the
file themselves: it is local to each machine, so the parsed file is never shared through
Redis. A file that turns invalid after start-up never replaces a good configuration: the
reload answers 400 naming file and field, and the old configuration stays in use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from promptrelay.cache.base import CacheEntry, ContentType
from promptrelay.cache.keys import entry_key

if TYPE_CHECKING:
    from promptrelay.cache.tiered import TieredCache
    from promptrelay.settings import Settings

__all__ = ["Price", "ProviderConfig", "ProviderConfigError", "Providers"]

log = logging.getLogger("promptrelay.providers")

_TOP = frozenset({"default_model", "aliases", "models", "timeout"})
_MODEL_FIELDS = frozenset({"input_per_mtok", "output_per_mtok", "timeout"})


class ProviderConfigError(ValueError):
    """The providers file is invalid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    default_model: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)
    timeouts: Mapping[str, float] = field(default_factory=dict)
    timeout: float | None = None

    @classmethod
    def parse(cls, data: Any, source: str) -> ProviderConfig:
        """Validate a decoded YAML document; errors say `{source}: {field}: what`."""

        def fail(where: str, message: str) -> ProviderConfigError:
            return ProviderConfigError(f"{source}: {where}: {message}")

        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise fail("(top level)", "must be a mapping")
        for name in data:
            if name not in _TOP:
                raise fail(str(name), f"unknown field (known: {', '.join(sorted(_TOP))})")
        aliases = _aliases(data.get("aliases"), fail)
        prices, timeouts = _models(data.get("models"), fail)
        default = data.get("default_model")
        if default is not None and (not isinstance(default, str) or not default):
            raise fail("default_model", "must be a model id or an alias")
        timeout = data.get("timeout")
        if timeout is not None:
            timeout = _positive(timeout, "timeout", fail)
        return cls(
            default_model=aliases.get(default, default) if default else None,
            aliases=MappingProxyType(aliases),
            prices=MappingProxyType(prices),
            timeouts=MappingProxyType(timeouts),
            timeout=timeout,
        )

    def to_json(self) -> dict[str, Any]:
        models: dict[str, dict[str, float]] = {}
        for model, price in self.prices.items():
            models[model] = {
                "input_per_mtok": price.input_per_mtok,
                "output_per_mtok": price.output_per_mtok,
            }
        for model, seconds in self.timeouts.items():
            models.setdefault(model, {})["timeout"] = seconds
        data: dict[str, Any] = {"aliases": dict(self.aliases), "models": models}
        if self.default_model is not None:
            data["default_model"] = self.default_model
        if self.timeout is not None:
            data["timeout"] = self.timeout
        return data


def _aliases(value: Any, fail: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail("aliases", "must be a mapping of alias: model id")
    for alias, target in value.items():
        if not isinstance(alias, str) or not isinstance(target, str) or not target:
            raise fail(f"aliases.{alias}", "must map a name to a model id")
        if target in value:
            raise fail(f"aliases.{alias}", f"points at another alias ({target}); name a model")
    return dict(value)


def _models(value: Any, fail: Any) -> tuple[dict[str, Price], dict[str, float]]:
    prices: dict[str, Price] = {}
    timeouts: dict[str, float] = {}
    if value is None:
        return prices, timeouts
    if not isinstance(value, dict):
        raise fail("models", "must be a mapping of model id: settings")
    for model, spec in value.items():
        where = f"models.{model}"
        if not isinstance(spec, dict):
            raise fail(where, "must be a mapping (input_per_mtok, output_per_mtok, timeout)")
        for name in spec:
            if name not in _MODEL_FIELDS:
                raise fail(f"{where}.{name}", "unknown field")
        has = [name in spec for name in ("input_per_mtok", "output_per_mtok")]
        if any(has) and not all(has):
            raise fail(where, "give both input_per_mtok and output_per_mtok")
        if all(has):
            prices[str(model)] = Price(
                _price(spec["input_per_mtok"], f"{where}.input_per_mtok", fail),
                _price(spec["output_per_mtok"], f"{where}.output_per_mtok", fail),
            )
        if "timeout" in spec:
            timeouts[str(model)] = _positive(spec["timeout"], f"{where}.timeout", fail)
    return prices, timeouts


def _price(value: Any, where: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise fail(where, "must be a number >= 0 (US dollars per million tokens)")
    if not math.isfinite(value):
        raise fail(where, "must be finite")
    return float(value)


def _positive(value: Any, where: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise fail(where, "must be a number of seconds > 0")
    if not math.isfinite(value):
        raise fail(where, "must be finite")
    return float(value)


def read_file(path: str) -> ProviderConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ProviderConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ProviderConfigError(f"{path}: not valid YAML: {error}") from None
    return ProviderConfig.parse(data, path)


class Providers:
    """`runtime.providers`: the current configuration, plain and synchronous to read."""

    def __init__(
        self, path: str | None, cache: TieredCache, *, fallback_model: str, max_timeout: float
    ) -> None:
        self.path = path
        self._cache = cache
        self._fallback_model = fallback_model
        self._max_timeout = max_timeout
        self.config = ProviderConfig()
        self._reading = asyncio.Lock()
        digest = hashlib.sha256((path or "").encode()).hexdigest()[:16]
        self._key = entry_key("global", ContentType.PROVIDER_CONFIG, digest)

    @classmethod
    def from_settings(cls, settings: Settings, cache: TieredCache) -> Providers:
        return cls(
            settings.providers_file,
            cache,
            fallback_model=settings.default_model,
            max_timeout=settings.upstream_timeout,
        )

    async def start(self) -> None:
        """Read and validate the file (ProviderConfigError stops start-up)."""
        if self.path is not None:
            await self._store(read_file(self.path))

    async def reload(self) -> ProviderConfig:
        """Re-read the file now; every process drops its copy. Bad file: old one stays."""
        if self.path is None:
            return self.config
        config = await asyncio.to_thread(read_file, self.path)
        await self._cache.delete(self._key)  # and in every other process's memory tier
        await self._store(config)
        return config

    async def refresh(self) -> None:
        """Re-read the file when its marker in the memory tier has expired or was cleared
        (reload in any process, cache clear, memory guard trim); otherwise one lookup.

        The parsed configuration lives here, not in the cache: the file is local to this
        machine, so the marker is never shared through Redis either.
        """
        if self.path is None or self._cache.memory.touch(self._key):
            return
        async with self._reading:  # one read for a burst of requests
            if self._cache.memory.touch(self._key):
                return
            try:
                config = await asyncio.to_thread(read_file, self.path)
            except ProviderConfigError as error:
                log.error("providers file is invalid, keeping the last good one: %s", error)
                config = self.config
            await self._store(config)

    async def _store(self, config: ProviderConfig) -> None:
        entry = CacheEntry(b"1", time.time(), ContentType.PROVIDER_CONFIG)
        await self._cache.set(self._key, entry, shared=False)
        self.config = config

    # -- reading (plain, synchronous) ------------------------------------------------------

    @property
    def default_model(self) -> str:
        return self.config.default_model or self._fallback_model

    def resolve(self, model: str) -> str:
        return self.config.aliases.get(model, model)

    def price(self, model: str) -> Price | None:
        return self.config.prices.get(self.resolve(model))

    def timeout(self, model: str) -> float | None:
        """Seconds for one upstream call of this model (never above UPSTREAM_TIMEOUT)."""
        seconds = self.config.timeouts.get(self.resolve(model), self.config.timeout)
        return None if seconds is None else min(seconds, self._max_timeout)

    def snapshot(self) -> dict[str, Any]:
        return {"file": self.path, **self.config.to_json()}
