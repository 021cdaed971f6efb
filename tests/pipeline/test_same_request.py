"""One logical request through every face: the same model and the same cache key.

The request: the default namespace and anthropic-version, the text PROMPT as the one
user message, and the model as a client names it: the alias `judge` where the face takes
a Messages body, no model at all where it takes a generate body or a template (so the
providers file's default_model applies). Every face must store (or, for the dry run,
name) the key the template dry run answers, and send `claude-judge-1`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

PROMPT = "Name one prime number."
MODEL = "claude-judge-1"
PROVIDERS = f"""\
default_model: judge
aliases:
  judge: {MODEL}
"""
MAX_TOKENS = 1024  # DEFAULT_MAX_TOKENS
MESSAGES_BODY = {
    "model": "judge",
    "max_tokens": MAX_TOKENS,
    "messages": [{"role": "user", "content": PROMPT}],
}


class Face:
    """A started gateway with a providers file and the template `prime`, plus the cache
    key and the Messages body its dry run answered."""

    def __init__(self, gateway: Any, dry_run: dict[str, Any]) -> None:
        self.gateway = gateway
        self.url: str = gateway.url
        self.key: str = dry_run["cache_key"]
        self.dry_run = dry_run

    def stored_model(self) -> str | None:
        """The model of the answer stored under the dry run's key (None: not stored)."""
        runtime = self.gateway.app.runtime
        entry = runtime.cache.memory.get_now(self.key)
        return None if entry is None else str(entry.meta["model"])


@pytest.fixture
async def face(gateway_factory, fake_upstream, tmp_path: Path) -> Face:
    providers = tmp_path / "providers.yaml"
    providers.write_text(PROVIDERS)
    gateway = gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers),
        database_url=f"sqlite:///{tmp_path}/templates.db",
        upstream_retries=0,
    )
    async with aiohttp.ClientSession() as session:
        saved = await session.put(f"{gateway.url}/api/templates/prime", json={"body": PROMPT})
        assert saved.status == 201, await saved.text()
        rendered = await session.post(f"{gateway.url}/api/templates/prime/render", json={})
        assert rendered.status == 200, await rendered.text()
        return Face(gateway, await rendered.json())


def test_the_dry_run_shows_the_model_that_is_sent(face: Face) -> None:
    assert face.dry_run["request"] == {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    assert face.key.startswith("pr:default:claude_response:")
    assert face.stored_model() is None  # a dry run sends nothing and stores nothing


async def test_v1_messages(face: Face, fake_upstream) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{face.url}/v1/messages", json=MESSAGES_BODY)
        assert response.status == 200
        assert (await response.json())["model"] == MODEL
    assert face.stored_model() == MODEL


async def test_api_generate(face: Face) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{face.url}/api/generate", json={"prompt": PROMPT})
        assert response.status == 200
        assert (await response.json())["model"] == MODEL
    assert face.stored_model() == MODEL


async def test_api_generate_with_the_template(face: Face) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{face.url}/api/generate", json={"template": "prime"})
        assert response.status == 200
    assert face.stored_model() == MODEL


async def test_sync_batch_item(face: Face) -> None:
    batch = {"requests": [{"prompt": PROMPT}]}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{face.url}/api/generate/batch", json=batch)
        answer = await response.json()
    assert answer["results"][0]["ok"] is True, answer
    assert answer["results"][0]["result"]["model"] == MODEL
    assert face.stored_model() == MODEL


async def test_async_batch_item(face: Face, fake_upstream) -> None:
    batch = {"mode": "async", "requests": [{"prompt": PROMPT}]}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{face.url}/api/generate/batch", json=batch)
        assert response.status == 202, await response.text()
        job = await response.json()
        for _ in range(100):
            async with session.get(f"{face.url}/api/batches/{job['id']}") as polled:
                view = await polled.json()
            if view["status"] == "ended":
                break
            await asyncio.sleep(0.05)
    assert view["status"] == "ended", view
    assert view["results"][0]["ok"] is True, view
    assert face.stored_model() == MODEL  # the result, stored under the same key


async def test_cache_warm(face: Face) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{face.url}/api/cache/warm", json={"requests": [MESSAGES_BODY]}
        )
        answer = await response.json()
    assert answer["stored"] == 1, answer
    assert face.stored_model() == MODEL
