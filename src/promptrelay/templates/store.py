"""The template store: one interface, SQL kept in one place, two database back ends.

    store = open_store(settings.database_url)     # SQLite file or PostgreSQL
    await store.start()                           # connects, creates tables if needed
    saved = await store.save(draft)               # -> Template(version=n+1)
    await store.get("greet")                      # latest; get("greet", 2) a named one
    await store.delete("greet")                   # every version; numbers are not reused
    await store.close()

Two tables. `template_heads` holds one row per name with the latest version number and
a deleted flag; `template_versions` holds the immutable versions. A save bumps the head
with one atomic upsert (`... ON CONFLICT DO UPDATE ... RETURNING latest`, valid on
SQLite >= 3.35 and PostgreSQL) and inserts the version in the same transaction, so two
concurrent saves (even from two processes) never get the same number. A deleted name
keeps its head row: saving it again continues at the next number, so `name@3` never
names two different texts (caches of old versions cannot be wrong).

The back ends (`templates/sqlite.py`, `templates/postgres.py`) only run SQL; the SQL is
written once here with `$1`-style placeholders.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from promptrelay.templates.model import Template, TemplateDraft, Variable, VersionInfo

__all__ = [
    "Connection",
    "Database",
    "SqlTemplateStore",
    "StoreError",
    "TemplateStore",
    "open_store",
]

Row = Sequence[Any]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS template_heads (
        name TEXT PRIMARY KEY,
        latest INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS template_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,
        system TEXT,
        model TEXT,
        params TEXT NOT NULL,
        variables TEXT NOT NULL,
        description TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        cache TEXT,
        PRIMARY KEY (name, version)
    )""",
)
# Columns added after a release: a database created before gets them at start (each
# back end adds a missing one its own way); rows saved before read NULL.
ADDED_COLUMNS = (("template_versions", "cache", "TEXT"),)

_COLUMNS = "v.name, v.version, v.body, v.system, v.model, v.params, v.variables, "
_COLUMNS += "v.description, v.created_at, v.cache"

_BUMP = """INSERT INTO template_heads (name, latest, deleted) VALUES ($1, 1, 0)
    ON CONFLICT (name) DO UPDATE SET latest = template_heads.latest + 1, deleted = 0
    RETURNING latest"""
_INSERT = """INSERT INTO template_versions
    (name, version, body, system, model, params, variables, description, created_at, cache)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""
_LATEST = f"""SELECT {_COLUMNS} FROM template_heads h
    JOIN template_versions v ON v.name = h.name AND v.version = h.latest
    WHERE h.name = $1 AND h.deleted = 0"""
_VERSION = f"SELECT {_COLUMNS} FROM template_versions v WHERE v.name = $1 AND v.version = $2"
_LIST = """SELECT h.name, h.latest, v.created_at, v.description FROM template_heads h
    JOIN template_versions v ON v.name = h.name AND v.version = h.latest
    WHERE h.deleted = 0 ORDER BY h.name"""
_VERSIONS = """SELECT v.name, v.version, v.created_at, v.description FROM template_versions v
    WHERE v.name = $1 ORDER BY v.version"""
_DELETE_VERSIONS = "DELETE FROM template_versions WHERE name = $1"
_MARK_DELETED = "UPDATE template_heads SET deleted = 1 WHERE name = $1"


class StoreError(Exception):
    """The database failed (connection lost, locked too long, ...); back ends raise this
    instead of their driver's errors. The message never holds a password."""


class Connection(Protocol):
    """What the store needs from a database connection inside a transaction."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it touched."""
        ...


class Database(Protocol):
    """A back end: opens, runs transactions, closes."""

    async def start(
        self, schema: Sequence[str], added: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Create the tables (`schema`), then add each (table, column, type) of `added`
        that an older database lacks."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...

    async def close(self) -> None: ...


class TemplateStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def save(self, draft: TemplateDraft) -> Template: ...

    async def get(self, name: str, version: int | None = None) -> Template | None: ...

    async def list_latest(self) -> list[VersionInfo]:
        """The latest version of every template that is not deleted, by name."""
        ...

    async def versions(self, name: str) -> list[VersionInfo]: ...

    async def delete(self, name: str) -> int:
        """Delete every version; return how many there were (0: no such template)."""
        ...


class SqlTemplateStore:
    """`TemplateStore` over any `Database`."""

    def __init__(self, database: Database, *, clock: Any = time.time) -> None:
        self._db = database
        self._clock = clock

    @property
    def database(self) -> Database:
        return self._db

    async def start(self) -> None:
        await self._db.start(SCHEMA, ADDED_COLUMNS)

    async def close(self) -> None:
        await self._db.close()

    async def save(self, draft: TemplateDraft) -> Template:
        created_at = float(self._clock())
        async with self._db.transaction() as conn:
            rows = await conn.fetch(_BUMP, draft.name)
            version = int(rows[0][0])
            await conn.execute(
                _INSERT,
                draft.name,
                version,
                draft.body,
                draft.system,
                draft.model,
                orjson.dumps(dict(draft.params)).decode(),
                orjson.dumps([v.to_json() for v in draft.variables]).decode(),
                draft.description,
                created_at,
                draft.cache,
            )
        return Template(draft=draft, version=version, created_at=created_at)

    async def get(self, name: str, version: int | None = None) -> Template | None:
        async with self._db.transaction() as conn:
            if version is None:
                rows = await conn.fetch(_LATEST, name)
            else:
                rows = await conn.fetch(_VERSION, name, version)
        return _template(rows[0]) if rows else None

    async def list_latest(self) -> list[VersionInfo]:
        async with self._db.transaction() as conn:
            rows = await conn.fetch(_LIST)
        return [_info(row) for row in rows]

    async def versions(self, name: str) -> list[VersionInfo]:
        async with self._db.transaction() as conn:
            rows = await conn.fetch(_VERSIONS, name)
        return [_info(row) for row in rows]

    async def delete(self, name: str) -> int:
        async with self._db.transaction() as conn:
            removed = await conn.execute(_DELETE_VERSIONS, name)
            if removed:
                await conn.execute(_MARK_DELETED, name)
        return removed


def _template(row: Row) -> Template:
    name, version, body, system, model, params, variables, description, created_at, cache = row
    draft = TemplateDraft(
        name=name,
        body=body,
        system=system,
        model=model,
        params=orjson.loads(params),
        variables=tuple(Variable(**item) for item in orjson.loads(variables)),
        description=description,
        cache=cache,
    )
    return Template(draft=draft, version=int(version), created_at=float(created_at))


def _info(row: Row) -> VersionInfo:
    name, version, created_at, description = row
    return VersionInfo(
        name=name, version=int(version), created_at=float(created_at), description=description
    )


def open_store(url: str) -> SqlTemplateStore:
    """A store for DATABASE_URL: `sqlite:///path` (relative) / `sqlite:////abs` or
    `postgresql://user:pass@host:port/db`. Nothing connects before `start()`."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from promptrelay.templates.sqlite import SqliteDatabase

        return SqlTemplateStore(SqliteDatabase(sqlite_path(url)))
    if scheme in ("postgresql", "postgres"):
        from promptrelay.templates.postgres import PostgresDatabase

        return SqlTemplateStore(PostgresDatabase(url))
    raise ValueError("DATABASE_URL: use sqlite:///file.db or postgresql://user@host/db")


def sqlite_path(url: str) -> str:
    """`sqlite:///a.db` -> `a.db`; `sqlite:////tmp/a.db` -> `/tmp/a.db`; `:memory:` kept."""
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise ValueError("DATABASE_URL: a SQLite URL looks like sqlite:///promptrelay.db")
    path = rest[1:]
    if not path:
        raise ValueError("DATABASE_URL: the SQLite URL names no file")
    return path
