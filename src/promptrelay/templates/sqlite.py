"""SQLite back end (the default): aiosqlite, one connection, transactions in turn.

aiosqlite runs the stdlib `sqlite3` module on one worker thread per connection, so
queries never block the event loop. One connection serves the process; an asyncio lock
keeps one transaction at a time on it. Several processes may share the file: WAL mode
lets readers run beside a writer, `BEGIN IMMEDIATE` takes the write lock up front (no
deadlock between two upgrading readers) and `busy_timeout` waits for it.

Placeholders: the store writes `$1`; SQLite's numbered form is `?1`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from promptrelay.templates.store import Row, StoreError

__all__ = ["SqliteDatabase"]

_PLACEHOLDER = re.compile(r"\$(\d+)")
_BUSY_TIMEOUT_MS = 5000


def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _Conn:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_sqlite_sql(sql), args) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn.execute(_sqlite_sql(sql), args) as cursor:
            return cursor.rowcount


async def _add_column(conn: aiosqlite.Connection, table: str, column: str, kind: str) -> None:
    """SQLite has no ADD COLUMN IF NOT EXISTS: look first; another process adding it in
    between makes ours a duplicate, which is the state we wanted."""
    async with conn.execute(f"PRAGMA table_info({table})") as cursor:
        if any(row[1] == column for row in await cursor.fetchall()):
            return
    try:
        await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    except sqlite3.OperationalError as error:
        if "duplicate column" not in str(error):
            raise


class SqliteDatabase:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqliteDatabase({self.path!r})"

    async def start(
        self, schema: Sequence[str], added: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        if self.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, exist_ok=True)
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"SQLite {self.path}: {error}") from None
        try:
            await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                await conn.execute("PRAGMA journal_mode = WAL")
            for statement in schema:
                await conn.execute(statement)
            for table, column, kind in added:
                await _add_column(conn, table, column, kind)
        except sqlite3.Error as error:
            await conn.close()
            raise StoreError(f"SQLite {self.path}: {error}") from None
        self._conn = conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Conn]:
        if self._conn is None:
            raise RuntimeError("the SQLite template store has not started")
        conn = self._conn
        async with self._lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _Conn(conn)
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
            except sqlite3.Error as error:
                raise StoreError(f"SQLite {self.path}: {error}") from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
