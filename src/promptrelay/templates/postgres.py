"""PostgreSQL back end: asyncpg with a small pool.

asyncpg speaks PostgreSQL's binary protocol itself (no libpq to install), is written
for asyncio, and uses the same `$1` placeholders as the store's SQL. The URL may hold a
password: it is never logged or put into an error message (`redacted`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from promptrelay.templates.store import Row, StoreError

__all__ = ["PostgresDatabase", "redacted"]

_POOL_MAX = 4
_CONNECT_TIMEOUT = 10.0


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


class _Conn:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        records = await self._conn.fetch(sql, *args)
        return [tuple(record) for record in records]

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(sql, *args)
        # asyncpg answers the command tag: "DELETE 3", "INSERT 0 1", "UPDATE 1"
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0


async def _create_schema(
    pool: asyncpg.Pool, schema: Sequence[str], added: Sequence[tuple[str, str, str]]
) -> None:
    async with pool.acquire() as conn:
        # Two processes starting at once may race on CREATE TABLE IF NOT EXISTS;
        # an advisory lock makes the schema step one at a time.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7251001)")
            for statement in schema:
                await conn.execute(statement)
            for table, column, kind in added:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")


async def _close_quietly(pool: asyncpg.Pool) -> None:
    """Close the pool gracefully; if even that fails, drop its connections."""
    try:
        await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT)
    except Exception:
        pool.terminate()


def _reason(error: BaseException) -> str:
    """The error's type, with the server's message (e.g. "permission denied for schema
    public") when the server sent one; a driver or OS error's text may quote the URL."""
    name = type(error).__name__
    return f"{name}: {error}" if isinstance(error, asyncpg.PostgresError) else name


class PostgresDatabase:
    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresDatabase({redacted(self._url)!r})"

    async def start(
        self, schema: Sequence[str], added: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        try:
            pool = await asyncpg.create_pool(
                self._url, min_size=1, max_size=_POOL_MAX, timeout=_CONNECT_TIMEOUT
            )
        except Exception as error:  # refused, timed out, bad credentials, bad URL options
            raise StoreError(
                f"cannot connect to PostgreSQL at {redacted(self._url)}: {type(error).__name__}"
            ) from None
        try:
            await _create_schema(pool, schema, added)
        except Exception as error:
            # A pool left open keeps its connections (and reconnects to its floor): each
            # retried start would add one until the server has none left to give.
            await _close_quietly(pool)
            raise StoreError(
                f"cannot set up the template tables at {redacted(self._url)}: {_reason(error)}"
            ) from None
        except BaseException:  # cancelled: no time for a polite goodbye
            pool.terminate()
            raise
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL template store has not started")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield _Conn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise StoreError(f"PostgreSQL: {type(error).__name__}: {error}") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
