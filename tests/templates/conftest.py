"""One store fixture, parametrised over both back ends: every store test runs on each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from promptrelay.templates.store import SqlTemplateStore, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/templates.db"
    server = request.getfixturevalue("postgres_server")
    url: str = server.url
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlTemplateStore]:
    store = open_store(database_url)
    await store.start()
    yield store
    await store.close()
