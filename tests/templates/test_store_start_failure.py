"""A PostgreSQL store whose schema step fails (the role may not CREATE) answers 503 on each
templated request, leaks no connections, and starts cleanly once the privilege is given.

The role and its database are made for the test on the throwaway cluster and dropped at
the end, so the session's other tests never see them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from promptrelay.templates.store import StoreError, open_store
from tests.fixtures_postgres import PostgresServer

_REQUESTS = 12  # more than the pool's 4 connections, so a leak cannot hide under it
_POOL_MAX = 4


@dataclass(frozen=True)
class LimitedRole:
    """A login role that may connect to `database` but not create anything in it."""

    role: str
    database: str
    url: str
    admin_url: str


@pytest.fixture
async def limited_role(postgres_server: PostgresServer) -> AsyncIterator[LimitedRole]:
    suffix = uuid.uuid4().hex[:8]
    role, database = f"nocreate_{suffix}", f"nocreate_db_{suffix}"
    await _execute(postgres_server.url, f"CREATE ROLE {role} LOGIN", f"CREATE DATABASE {database}")
    admin_url = f"postgresql://promptrelay@127.0.0.1:{postgres_server.port}/{database}"
    # PostgreSQL >= 15 already withholds CREATE on public; older versions grant it.
    await _execute(admin_url, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = f"postgresql://{role}@127.0.0.1:{postgres_server.port}/{database}"
    yield LimitedRole(role=role, database=database, url=url, admin_url=admin_url)
    await _execute(
        postgres_server.url,
        f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
        f"DROP ROLE IF EXISTS {role}",
    )


async def _execute(url: str, *statements: str) -> None:
    """Run `statements` in order on one connection to `url`."""
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _backends(admin_url: str, role: str) -> int:
    conn = await asyncpg.connect(admin_url)
    try:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1"
        count = await conn.fetchval(sql, role)
    finally:
        await conn.close()
    return int(count)


async def _settled_backends(admin_url: str, role: str, timeout: float = 5.0) -> int:
    """The role's backends once closed ones had time to exit (a backend ends a moment
    after its client says goodbye)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        count = await _backends(admin_url, role)
        if count == 0 or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.05)


async def test_schema_failure_is_a_store_error_and_closes_the_pool(limited_role):
    store = open_store(limited_role.url)
    for _ in range(3):
        with pytest.raises(StoreError) as caught:
            await store.start()
        assert "InsufficientPrivilege" in str(caught.value)
    # A closed pool has told the server goodbye: its backends are gone, not idle.
    assert await _settled_backends(limited_role.admin_url, limited_role.role) == 0
    await store.close()


async def test_schema_failure_answers_503_and_connections_stay_bounded(
    gateway_factory, limited_role
):
    gateway = gateway_factory(database_url=limited_role.url)
    calls = [
        ("GET", "/api/templates/t", None),
        ("PUT", "/api/templates/t", {"body": "x"}),
        ("POST", "/api/generate", {"template": "t", "variables": {}}),
    ]
    most = 0
    async with aiohttp.ClientSession() as session:
        for index in range(_REQUESTS):
            method, path, body = calls[index % len(calls)]
            response = await session.request(method, f"{gateway.url}{path}", json=body)
            text = await response.text()
            assert response.status == 503, text
            payload = json.loads(text)
            assert payload["error"]["type"] == "api_error"
            assert "template store unavailable" in payload["error"]["message"]
            most = max(most, await _backends(limited_role.admin_url, limited_role.role))
        assert most <= 2, f"{most} backends left open by {_REQUESTS} failed starts"
        assert await _settled_backends(limited_role.admin_url, limited_role.role) == 0

        # Once the role may create, the next request starts the store and succeeds.
        admin = await asyncpg.connect(limited_role.admin_url)
        try:
            await admin.execute(f"GRANT CREATE ON SCHEMA public TO {limited_role.role}")
        finally:
            await admin.close()
        saved = await session.put(f"{gateway.url}/api/templates/t", json={"body": "x"})
        assert saved.status == 201, await saved.text()
        got = await session.get(f"{gateway.url}/api/templates/t")
        assert got.status == 200
    assert await _backends(limited_role.admin_url, limited_role.role) <= _POOL_MAX
