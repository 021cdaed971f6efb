"""The template store contract, run against SQLite and a real PostgreSQL cluster."""

from __future__ import annotations

import asyncio

import pytest

from promptrelay.templates.model import TemplateDraft, Variable
from promptrelay.templates.store import SqlTemplateStore, open_store, sqlite_path


def _draft(name: str = "greet", body: str = "Hello {{ who }}", **kw: object) -> TemplateDraft:
    return TemplateDraft(name=name, body=body, **kw)  # type: ignore[arg-type]


async def test_every_save_is_a_new_version_and_latest_wins(store: SqlTemplateStore):
    first = await store.save(_draft(body="one"))
    second = await store.save(_draft(body="two"))
    assert (first.version, second.version) == (1, 2)
    latest = await store.get("greet")
    assert latest is not None and latest.version == 2 and latest.draft.body == "two"
    named = await store.get("greet", 1)
    assert named is not None and named.draft.body == "one"
    assert await store.get("greet", 3) is None
    assert await store.get("other") is None


async def test_all_fields_round_trip(store: SqlTemplateStore):
    draft = TemplateDraft(
        name="full",
        body="Summarise {{ text }} in {{ words }} words",
        system="You are {{ persona }}",
        model="fast",
        params={"max_tokens": 200, "temperature": 0.3, "stop_sequences": ["END"]},
        variables=(
            Variable("text"),
            Variable("words", required=False, default=50),
            Variable("persona", required=False, default="terse"),
        ),
        description="summaries",
        cache="1h",
    )
    saved = await store.save(draft)
    loaded = await store.get("full")
    assert loaded is not None
    assert loaded.draft == draft
    assert loaded.created_at == pytest.approx(saved.created_at)


async def test_list_and_versions(store: SqlTemplateStore):
    await store.save(_draft("b", description="first b"))
    await store.save(_draft("a"))
    await store.save(_draft("b", description="second b"))
    listed = await store.list_latest()
    assert [(info.name, info.version) for info in listed] == [("a", 1), ("b", 2)]
    assert listed[1].description == "second b"
    versions = await store.versions("b")
    assert [v.version for v in versions] == [1, 2]
    assert [v.description for v in versions] == ["first b", "second b"]
    assert await store.versions("missing") == []


async def test_delete_removes_every_version_and_numbers_are_not_reused(store: SqlTemplateStore):
    await store.save(_draft(body="one"))
    await store.save(_draft(body="two"))
    assert await store.delete("greet") == 2
    assert await store.get("greet") is None
    assert await store.get("greet", 1) is None
    assert await store.list_latest() == []
    assert await store.delete("greet") == 0
    again = await store.save(_draft(body="three"))
    assert again.version == 3  # name@1 and name@2 can never mean another text
    assert [info.version for info in await store.list_latest()] == [3]


async def test_concurrent_saves_get_distinct_versions(store: SqlTemplateStore):
    saved = await asyncio.gather(*(store.save(_draft(body=f"v{i}")) for i in range(12)))
    assert sorted(t.version for t in saved) == list(range(1, 13))
    for template in saved:
        loaded = await store.get("greet", template.version)
        assert loaded is not None and loaded.draft.body == template.draft.body


async def test_two_stores_on_one_database_share_numbering(database_url: str):
    one, two = open_store(database_url), open_store(database_url)
    await one.start()
    await two.start()
    try:
        results = await asyncio.gather(
            *(store.save(_draft(body=str(i))) for i in range(6) for store in (one, two))
        )
        assert sorted(t.version for t in results) == list(range(1, 13))
        latest = await one.get("greet")
        assert latest is not None and latest.version == 12
    finally:
        await one.close()
        await two.close()


async def test_data_survives_a_restart(database_url: str):
    store = open_store(database_url)
    await store.start()
    await store.save(_draft(body="kept"))
    await store.close()
    store = open_store(database_url)
    await store.start()
    try:
        loaded = await store.get("greet")
        assert loaded is not None and loaded.draft.body == "kept"
    finally:
        await store.close()


def test_urls_are_checked():
    assert sqlite_path("sqlite:///promptrelay.db") == "promptrelay.db"
    assert sqlite_path("sqlite:////tmp/x.db") == "/tmp/x.db"
    with pytest.raises(ValueError, match="DATABASE_URL"):
        open_store("mysql://x/y")
    with pytest.raises(ValueError, match="DATABASE_URL"):
        open_store("sqlite://")
