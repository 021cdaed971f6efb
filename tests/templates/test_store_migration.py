"""A database made before templates had `cache` gets the column at start, on both back
ends: old rows read `cache` as None, new saves keep it, and a second start is a no-op."""

from __future__ import annotations

import sqlite3

import asyncpg

from promptrelay.templates.model import TemplateDraft
from promptrelay.templates.store import open_store, sqlite_path

# template_versions as it was created before the `cache` column existed
_OLD_VERSIONS = """CREATE TABLE template_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, system TEXT,
    model TEXT, params TEXT NOT NULL, variables TEXT NOT NULL, description TEXT,
    created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, version))"""
_OLD_HEADS = """CREATE TABLE template_heads (name TEXT PRIMARY KEY, latest INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0)"""
_ROWS = (
    "INSERT INTO template_heads VALUES ('old', 1, 0)",
    "INSERT INTO template_versions VALUES ('old', 1, 'Hi', 'Be kind', NULL, '{}', '[]', NULL, 1.5)",
)


async def _old_database(url: str) -> None:
    statements = (_OLD_HEADS, _OLD_VERSIONS, *_ROWS)
    if url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(url)) as lite:
            for statement in statements:
                lite.execute(statement)
        return
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_an_old_database_gets_the_cache_column(database_url: str) -> None:
    await _old_database(database_url)
    store = open_store(database_url)
    await store.start()
    try:
        old = await store.get("old")
        assert old is not None and old.draft.system == "Be kind" and old.draft.cache is None
        saved = await store.save(TemplateDraft(name="old", body="Hi", system="S", cache="5m"))
        assert saved.version == 2
    finally:
        await store.close()
    again = open_store(database_url)
    await again.start()  # the column is there now: nothing to add, no error
    try:
        latest = await again.get("old")
        assert latest is not None and latest.version == 2 and latest.draft.cache == "5m"
        first = await again.get("old", 1)
        assert first is not None and first.draft.cache is None
    finally:
        await again.close()
