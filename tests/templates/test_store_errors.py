"""A database that cannot be reached is a 503 that never shows the password; bad URLs stop
start-up naming DATABASE_URL."""

from __future__ import annotations

import aiohttp
import pytest

from promptrelay.settings import ConfigError, load_settings
from promptrelay.templates.postgres import redacted
from promptrelay.templates.store import StoreError, open_store
from tests.fixtures_redis import free_port


def test_database_url_is_validated_without_echoing_it():
    for url in ("mysql://u:hunter2@h/db", "sqlite://", "postgresql:///nohost", "file.db"):
        with pytest.raises(ConfigError) as caught:
            load_settings(database_url=url)
        assert "DATABASE_URL" in str(caught.value)
        assert "hunter2" not in str(caught.value)
    assert load_settings(database_url="postgres://u@h:1/db").database_url == "postgres://u@h:1/db"


def test_redacted_hides_the_password():
    assert redacted("postgresql://u:hunter2@h:5433/db") == "postgresql://u:***@h:5433/db"
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_unreachable_postgres_is_a_store_error_without_the_password():
    store = open_store(f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db")
    with pytest.raises(StoreError) as caught:
        await store.start()
    assert "hunter2" not in str(caught.value) and "127.0.0.1" in str(caught.value)


async def test_unreachable_store_answers_503_over_http(gateway_factory):
    gateway = gateway_factory(database_url=f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db")
    async with aiohttp.ClientSession() as session:
        for method, path, body in [
            ("GET", "/api/templates", None),
            ("PUT", "/api/templates/t", {"body": "x"}),
            ("POST", "/api/generate", {"template": "t", "variables": {}}),
        ]:
            response = await session.request(method, f"{gateway.url}{path}", json=body)
            text = await response.text()
            assert response.status == 503, text
            assert "template store unavailable" in text and "hunter2" not in text
        health = await session.get(f"{gateway.url}/api/health")
        assert health.status == 200  # the rest of the gateway is unaffected
