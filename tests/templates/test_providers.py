"""PROVIDERS_FILE: aliases resolved before the cache key, prices, timeouts, reloads."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from promptrelay.app import Runtime
from promptrelay.core.providers import Price, ProviderConfigError
from promptrelay.settings import Settings

ADMIN_WRITE = {"x-promptrelay-admin": "1"}  # admin writes need a header forms cannot send

PROVIDERS = """\
default_model: fast
aliases:
  fast: claude-haiku-4-5
  smart: claude-opus-4-1
timeout: 300
models:
  claude-haiku-4-5: {input_per_mtok: 1.0, output_per_mtok: 5.0}
  slow-model: {timeout: 0.3}
"""


def _body(model: str, text: str = "hello") -> dict[str, Any]:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def providers_file(tmp_path: Path) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(PROVIDERS)
    return path


async def test_aliases_are_resolved_before_the_cache_key(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
    )
    async with aiohttp.ClientSession() as s:
        first = await s.post(f"{gateway.url}/v1/messages", json=_body("fast"))
        assert (await first.json())["model"] == "claude-haiku-4-5"
        assert first.headers["x-cache"] == "MISS"
        by_id = await s.post(f"{gateway.url}/v1/messages", json=_body("claude-haiku-4-5"))
        await by_id.read()
        assert by_id.headers["x-cache"] == "HIT"  # the alias and the id share one key
        generated = await (await s.post(f"{gateway.url}/api/generate", json={"prompt": "x"})).json()
        assert generated["model"] == "claude-haiku-4-5"  # default_model: fast
        smart = await s.post(f"{gateway.url}/api/generate", json={"prompt": "x", "model": "smart"})
        assert (await smart.json())["model"] == "claude-opus-4-1"
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 3
    runtime = gateway.app.runtime
    assert runtime is not None
    assert runtime.providers.price("fast") == Price(1.0, 5.0)
    assert runtime.providers.price("claude-haiku-4-5").cost(1_000_000, 200_000) == 2.0
    assert runtime.providers.price("smart") is None


async def test_a_model_timeout_narrows_the_upstream_budget(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
        upstream_retries=0,
    )
    fake_upstream.configure(latency_ms=3000)
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        response = await s.post(f"{gateway.url}/v1/messages", json=_body("slow-model"))
        elapsed = time.monotonic() - started
        await response.read()
    assert response.status == 504
    assert elapsed < 2.0  # 0.3 s budget, generous bound; the fake answers after 3 s


async def test_reload_without_restart_and_a_bad_file_keeps_the_old_one(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
    )
    async with aiohttp.ClientSession() as s:
        providers_file.write_text(PROVIDERS.replace("claude-haiku-4-5", "claude-haiku-9"))
        reloaded = await s.post(f"{gateway.url}/api/providers/reload", headers=ADMIN_WRITE)
        assert reloaded.status == 200
        assert (await reloaded.json())["aliases"]["fast"] == "claude-haiku-9"
        answer = await (await s.post(f"{gateway.url}/v1/messages", json=_body("fast"))).json()
        assert answer["model"] == "claude-haiku-9"

        providers_file.write_text(PROVIDERS.replace("output_per_mtok: 5.0", "output_per_mtok: -1"))
        refused = await s.post(f"{gateway.url}/api/providers/reload", headers=ADMIN_WRITE)
        payload = await refused.json()
        assert refused.status == 400
        message = payload["error"]["message"]
        assert str(providers_file) in message
        assert "models.claude-haiku-4-5.output_per_mtok" in message
        answer = await (await s.post(f"{gateway.url}/v1/messages", json=_body("fast"))).json()
        assert answer["model"] == "claude-haiku-9"  # the last good configuration


async def test_the_file_is_read_again_when_its_cache_entry_expires(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
        cache_ttl_provider_config=1,
    )
    async with aiohttp.ClientSession() as s:
        providers_file.write_text(PROVIDERS.replace("claude-haiku-4-5", "claude-haiku-7"))
        answer = await (await s.post(f"{gateway.url}/v1/messages", json=_body("fast"))).json()
        assert answer["model"] == "claude-haiku-4-5"  # still the cached configuration
        await asyncio.sleep(1.3)
        answer = await (await s.post(f"{gateway.url}/v1/messages", json=_body("fast"))).json()
        assert answer["model"] == "claude-haiku-7"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("colour: blue\n", "colour: unknown field"),
        ("aliases: [fast]\n", "aliases: must be a mapping"),
        ("aliases: {a: b, b: c}\n", "aliases.a: points at another alias"),
        ("models: {m: {input_per_mtok: 1}}\n", "models.m: give both"),
        ("models: {m: {timeout: 0}}\n", "models.m.timeout: must be a number of seconds"),
        ("models: {m: {price: 1}}\n", "models.m.price: unknown field"),
        ("timeout: soon\n", "timeout: must be a number"),
        ("aliases: {a: [x\n", "not valid YAML"),
    ],
)
async def test_invalid_file_stops_start_up_naming_file_and_field(tmp_path: Path, text, field):
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    runtime = Runtime(Settings(providers_file=str(path)))
    with pytest.raises(ProviderConfigError) as caught:
        await runtime.start()
    assert str(path) in str(caught.value) and field in str(caught.value)
    await runtime.close()


async def test_a_missing_file_stops_start_up(tmp_path: Path):
    runtime = Runtime(Settings(providers_file=str(tmp_path / "nope.yaml")))
    with pytest.raises(ProviderConfigError, match="cannot read"):
        await runtime.start()
    await runtime.close()


async def test_following_the_config_entry_counts_no_cache_hits(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
    )
    async with aiohttp.ClientSession() as s:
        for index in range(5):
            await (
                await s.post(f"{gateway.url}/v1/messages", json=_body("fast", str(index)))
            ).read()
        stats = await (await s.get(f"{gateway.url}/api/cache/stats")).json()
    assert stats["memory"]["hits"] == 0
    assert "provider_config" not in stats["by_content_type"]


async def test_the_files_prices_value_what_the_cache_saved(
    gateway_factory, fake_upstream, tmp_path: Path
):
    path = tmp_path / "providers.yaml"  # ten times the built-in list price, to tell them apart
    path.write_text("models:\n  claude-haiku-4-5: {input_per_mtok: 10.0, output_per_mtok: 50.0}\n")
    gateway = gateway_factory(
        anthropic_api_key="k", anthropic_base_url=fake_upstream.url, providers_file=str(path)
    )
    async with aiohttp.ClientSession() as s:
        first = await s.post(f"{gateway.url}/v1/messages", json=_body("claude-haiku-4-5"))
        usage = (await first.json())["usage"]
        hit = await s.post(f"{gateway.url}/v1/messages", json=_body("claude-haiku-4-5"))
        assert hit.headers["x-cache"] == "HIT"
        await hit.read()
        performance = await (await s.get(f"{gateway.url}/api/performance")).json()
    saved = performance["cache"]["saved"]
    expected = (usage["input_tokens"] * 10.0 + usage["output_tokens"] * 50.0) / 1e6
    assert saved["dollars"] == pytest.approx(expected, abs=1e-6)
    assert saved["unpriced_hits"] == 0


async def test_the_marker_survives_cache_churn_and_a_clear_rereads_the_file(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
        memory_cache_max_bytes=64 << 10,
    )
    async with aiohttp.ClientSession() as s:
        providers_file.write_text(PROVIDERS.replace("claude-haiku-4-5", "claude-haiku-7"))
        for index in range(300):  # each answer is stored; the small tier evicts again and again
            await (await s.post(f"{gateway.url}/v1/messages", json=_body("m", str(index)))).read()
        stats = await (await s.get(f"{gateway.url}/api/cache/stats")).json()
        assert stats["memory"]["evictions"] > 0
        answer = await (await s.post(f"{gateway.url}/v1/messages", json=_body("fast"))).json()
        assert answer["model"] == "claude-haiku-4-5"  # not evicted: the file was not re-read
        cleared = await s.post(f"{gateway.url}/api/cache/clear", json={})
        assert cleared.status == 200
        answer = await (await s.post(f"{gateway.url}/v1/messages", json=_body("fast", "2"))).json()
        assert answer["model"] == "claude-haiku-7"


async def test_warming_an_alias_fills_the_key_messages_reads(
    gateway_factory, fake_upstream, providers_file
):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        providers_file=str(providers_file),
    )
    async with aiohttp.ClientSession() as s:
        warmed = await s.post(
            f"{gateway.url}/api/cache/warm", json={"requests": [_body("fast", "warm me")]}
        )
        assert (await warmed.json())["stored"] == 1
        hit = await s.post(f"{gateway.url}/v1/messages", json=_body("claude-haiku-4-5", "warm me"))
        assert (await hit.json())["model"] == "claude-haiku-4-5"
        assert hit.headers["x-cache"] == "HIT"
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1
