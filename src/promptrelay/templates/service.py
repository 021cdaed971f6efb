"""Templates as the rest of promptrelay sees them: store + cache + renderer + seeding.

    templates = TemplateService(open_store(url), cache, Renderer(limits))
    saved = await templates.save("greet", {"body": "Hi {{ who }}", "variables": ["who"]})
    rendered = await templates.render("greet", None, {"who": "Ada"})
    await templates.seed("templates/")            # at start-up, from TEMPLATES_DIR

Lookups read the tiered cache first (content type `template_content`, its TTL) under
`pr:templates:template_content:{name}@{version|latest}` (named versions are shared
through Redis; "latest" stays in each process's memory). A save or a delete clears
`{name}@*` in both tiers and, through the cache's pub/sub invalidation, in every other
process's memory tier, so the next lookup anywhere sees the new version.

The database is opened on first use (or by seeding at start-up): a gateway that never
touches templates never creates the SQLite file. Rendering runs on a worker thread: its
work is bounded (see `sandbox.py`), but a template at the bound still takes a few
hundred milliseconds that the event loop should not wait for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from promptrelay.cache.base import CacheEntry, ContentType
from promptrelay.cache.glob import glob_escape
from promptrelay.cache.keys import entry_key
from promptrelay.errors import GatewayError, InvalidRequest, NotFound
from promptrelay.templates.model import (
    Template,
    TemplateDraft,
    VersionInfo,
    check_name,
    check_version,
)
from promptrelay.templates.render import Rendered, Renderer
from promptrelay.templates.store import StoreError, TemplateStore

if TYPE_CHECKING:
    from promptrelay.cache.tiered import TieredCache

__all__ = ["SeedError", "StoreUnavailable", "TemplateService"]

log = logging.getLogger("promptrelay.templates")

_NAMESPACE = "templates"  # shared by every tenant: templates are global


class StoreUnavailable(GatewayError):
    status = 503
    type = "api_error"


class SeedError(Exception):
    """A seed file is invalid; the message names the file and the field."""


class TemplateService:
    def __init__(self, store: TemplateStore, cache: TieredCache, renderer: Renderer) -> None:
        self.store = store
        self.cache = cache
        self.renderer = renderer
        self._started = False
        self._starting = asyncio.Lock()

    async def _ready(self) -> TemplateStore:
        if not self._started:
            async with self._starting:
                if not self._started:
                    try:
                        await self.store.start()
                    except (StoreError, OSError) as error:
                        raise StoreUnavailable(f"template store unavailable: {error}") from None
                    self._started = True
        return self.store

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.store.close()

    # -- writes ----------------------------------------------------------------------------

    async def save(self, name: str, data: Mapping[str, Any]) -> Template:
        draft = TemplateDraft.from_json(name, data)
        self.renderer.check(draft)
        store = await self._ready()
        try:
            saved = await store.save(draft)
        except StoreError as error:
            raise StoreUnavailable(f"template store unavailable: {error}") from None
        await self._invalidate(name)
        return saved

    async def delete(self, name: str) -> int:
        store = await self._ready()
        try:
            removed = await store.delete(check_name(name))
        except StoreError as error:
            raise StoreUnavailable(f"template store unavailable: {error}") from None
        await self._invalidate(name)
        if not removed:
            raise NotFound(f"template {name!r} does not exist")
        return removed

    async def _invalidate(self, name: str) -> None:
        await self.cache.clear(
            entry_key(_NAMESPACE, ContentType.TEMPLATE_CONTENT, f"{glob_escape(name)}@*")
        )

    # -- reads -----------------------------------------------------------------------------

    async def get(self, name: str, version: int | None = None) -> Template:
        """The named version (latest when None), through the cache; NotFound otherwise."""
        check_name(name)
        check_version(version)
        label = "latest" if version is None else version
        key = entry_key(_NAMESPACE, ContentType.TEMPLATE_CONTENT, f"{name}@{label}")
        entry = await self.cache.get(key)
        if entry is not None:
            return Template.from_json(orjson.loads(entry.value))
        store = await self._ready()
        try:
            template = await store.get(name, version)
        except StoreError as error:
            raise StoreUnavailable(f"template store unavailable: {error}") from None
        if template is None:
            which = "" if version is None else f" version {version}"
            raise NotFound(f"template {name!r}{which} does not exist")
        value = orjson.dumps(template.to_json())
        # A named version never changes: safe to share through Redis. "latest" stays in
        # this process's memory: a Redis write-behind landing after another process's
        # save-and-clear would otherwise serve the old version everywhere for the TTL.
        await self.cache.set(
            key,
            CacheEntry(value, time.time(), ContentType.TEMPLATE_CONTENT),
            shared=version is not None,
        )
        return template

    async def list_latest(self) -> list[VersionInfo]:
        store = await self._ready()
        try:
            return await store.list_latest()
        except StoreError as error:
            raise StoreUnavailable(f"template store unavailable: {error}") from None

    async def versions(self, name: str) -> list[VersionInfo]:
        store = await self._ready()
        try:
            found = await store.versions(check_name(name))
        except StoreError as error:
            raise StoreUnavailable(f"template store unavailable: {error}") from None
        if not found:
            raise NotFound(f"template {name!r} does not exist")
        return found

    async def render(
        self, name: str, version: int | None, variables: Mapping[str, Any]
    ) -> Rendered:
        template = await self.get(name, version)
        return await asyncio.to_thread(self.renderer.render, template, variables)

    # -- seeding ---------------------------------------------------------------------------

    async def seed(self, folder: str) -> list[tuple[str, int | None]]:
        """Save each template file whose content differs from its latest version.

        Returns (name, new version or None when unchanged). A restart with the same files
        adds no versions. Raises SeedError naming the file on the first bad one, before
        anything is saved.
        """
        drafts = [_read_seed(path, self.renderer) for path in _seed_files(folder)]
        store = await self._ready()
        results: list[tuple[str, int | None]] = []
        for draft in drafts:
            latest = await store.get(draft.name)
            if latest is not None and latest.draft.content() == draft.content():
                results.append((draft.name, None))
                continue
            saved = await store.save(draft)
            await self._invalidate(draft.name)
            results.append((draft.name, saved.version))
        changed = [f"{name}@{version}" for name, version in results if version is not None]
        log.info("seeded %d templates from %s (%d new versions)", len(results), folder,
                 len(changed))  # fmt: skip
        return results


def _seed_files(folder: str) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise SeedError(f"TEMPLATES_DIR: {folder} is not a directory")
    return sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _read_seed(path: Path, renderer: Renderer) -> TemplateDraft:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SeedError(f"{path}: cannot read YAML: {error}") from None
    if not isinstance(data, dict):
        raise SeedError(f"{path}: must be a mapping with body, variables, ...")
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise SeedError(f"{path}: name: must be a string")
    try:
        draft = TemplateDraft.from_json(name, data)
        renderer.check(draft)
    except InvalidRequest as error:
        raise SeedError(f"{path}: {error.message}") from None
    return draft
