"""POST /api/generate and GET /api/health."""

from __future__ import annotations

import aiohttp


async def test_generate_prompt_answers_the_n8n_shape(gateway_factory, fake_upstream):
    gateway = gateway_factory(anthropic_api_key="k", anthropic_base_url=fake_upstream.url)
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{gateway.url}/api/generate",
            json={"prompt": "Summarise this", "system": "be brief", "max_tokens": 50},
        )
        payload = await response.json()
    assert response.status == 200
    assert set(payload) >= {"id", "text", "model", "usage", "stop_reason", "cached", "latency_ms"}
    assert payload["text"]
    assert payload["cached"] is False
    assert payload["offline"] is False
    assert payload["model"] == gateway.settings.default_model


async def test_generate_passes_upstream_errors_through(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="k", anthropic_base_url=fake_upstream.url, upstream_retries=0
    )
    fake_upstream.configure(fail_next=1, fail_next_status=400)
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/api/generate", json={"prompt": "x"})
        payload = await response.json()
    assert response.status == 400
    assert payload["error"]["type"] == "invalid_request_error"


async def test_generate_messages_form_offline(gateway_factory):
    gateway = gateway_factory()
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"},
    ]
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/api/generate", json={"messages": messages})
        payload = await response.json()
    assert response.status == 200
    assert payload["offline"] is True
    assert "second" in payload["text"]


async def test_health_says_offline_without_any_key(gateway_factory):
    gateway = gateway_factory()
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{gateway.url}/api/health")
        payload = await response.json()
    assert response.status == 200
    assert payload["status"] == "ok"
    assert payload["mode"].startswith("offline")


async def test_health_reports_live_upstream(gateway_factory, fake_upstream):
    gateway = gateway_factory(anthropic_api_key="secret-k", anthropic_base_url=fake_upstream.url)
    async with aiohttp.ClientSession() as session:
        payload = await (await session.get(f"{gateway.url}/api/health")).json()
    assert payload["mode"] == "live"
    assert payload["upstream"]["reachable"] is True
    assert payload["upstream"]["pool"]["limit"] == 50
    assert "secret-k" not in str(payload)


async def test_an_offline_gateway_probes_no_upstream(gateway_factory):
    gateway = gateway_factory()  # no key; the default upstream is api.anthropic.com
    async with aiohttp.ClientSession() as session:
        payload = await (await session.get(f"{gateway.url}/api/health")).json()
    assert payload["mode"].startswith("offline")
    assert payload["upstream"]["reachable"] is None
    assert payload["upstream"]["probe"].startswith("skipped")
