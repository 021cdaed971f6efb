"""Prompt caching end to end, over real HTTP against the fake upstream: a template with
`cache: 5m` (and a `1h` one with a body marker) through /api/generate, and
PROMPT_CACHE_AUTO on /v1/messages (JSON and streamed). The fake must see the breakpoints,
its cache tokens must come back, a KEYS_FILE key's dollars and /api/performance's
Anthropic-cache savings must equal the dollars computed here by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pipeline.test_prompt_cost import _usage_of_stream

# $15 input, $75 output per million tokens: dear enough that a wrong multiplier shows in
# the six decimals /api/keys and /api/performance report
MODEL = "claude-opus-4-20250514"
IN, OUT = 15 / 1e6, 75 / 1e6
RULES = "rules " * 1000  # 6,000 characters: 1,500 tokens by the fake's count
KEY = {"x-api-key": "k-team"}


def _gateway(gateway_factory: Any, fake: Any, tmp_path: Path, **extra: Any) -> Any:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {name: team, key: k-team, dollars_per_day: 100}\n")
    return gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake.url,
        keys_file=str(keys),
        database_url=f"sqlite:///{tmp_path}/templates.db",
        **extra,
    )


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with session.post(url, json=body, headers=KEY) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _spent_and_saved(session: aiohttp.ClientSession, base: str) -> tuple[float, Any]:
    async with session.get(base + "/api/keys") as response:
        (team,) = (await response.json())["keys"]
    async with session.get(base + "/api/performance") as response:
        performance = await response.json()
    return team["usage"]["dollars_per_day"]["used"], performance["cache"]


async def test_template_with_cache_5m_marks_the_system_block_and_prices_the_cache(
    gateway_factory: Any, fake_upstream: Any, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_upstream, tmp_path)
    template = {"system": RULES, "cache": "5m", "body": "Q: {{ q }}", "variables": ["q"]}
    async with aiohttp.ClientSession() as session:
        base = gateway.url + "/api/templates/kb"
        async with session.put(base, json=template) as response:
            assert response.status == 201
        async with session.put(base, json={**template, "cache": "10m"}) as response:
            refused = (response.status, await response.json())
        async with session.get(base) as response:
            stored = await response.json()
        async with session.post(base + "/render", json={"variables": {"q": "x"}}) as response:
            dry_run = (await response.json())["request"]
        ask = {"template": "kb", "model": MODEL, "max_tokens": 16}
        url = gateway.url + "/api/generate"
        written = (await _post(session, url, {**ask, "variables": {"q": "one"}}))["usage"]
        seen = fake_upstream.stats()["last_cache_control"]
        read = (await _post(session, url, {**ask, "variables": {"q": "two"}}))["usage"]
        again = await _post(session, url, {**ask, "variables": {"q": "two"}})
        spent, cache = await _spent_and_saved(session, gateway.url)
    assert refused[0] == 400 and refused[1]["error"]["type"] == "invalid_request_error"
    assert refused[1]["error"]["message"].startswith("cache:")
    assert (stored["version"], stored["cache"]) == (1, "5m")  # the refused save made none
    assert dry_run["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert again["cached"] is True  # promptrelay's own cache answered this one
    assert seen == [["system.0", {"type": "ephemeral"}]]
    assert (
        written["cache_creation_input_tokens"] == 1500 and written["cache_read_input_tokens"] == 0
    )
    assert read["cache_read_input_tokens"] == 1500 and read["cache_creation_input_tokens"] == 0
    by_hand = (written["input_tokens"] * IN + 1500 * 1.25 * IN + written["output_tokens"] * OUT) + (
        read["input_tokens"] * IN + 1500 * 0.1 * IN + read["output_tokens"] * OUT
    )
    assert spent == pytest.approx(by_hand, abs=1e-6)
    # the fake answers 2 input and 6 output tokens here: written 2 x 15e-6 + 1500 x 1.25
    # x 15e-6 + 6 x 75e-6 = $0.028605, read 2 x 15e-6 + 1500 x 0.1 x 15e-6 + 6 x 75e-6 =
    # $0.002730 (priced as plain input, the 3,000 cached tokens would have cost $0.045)
    assert (written["input_tokens"], written["output_tokens"]) == (2, 6)
    assert spent == pytest.approx(0.028605 + 0.002730, abs=1e-6)
    anthropic = cache["anthropic_prompt_cache"]
    assert (anthropic["answers"], anthropic["read_tokens"], anthropic["written_tokens"]) == (
        2,
        1500,
        1500,
    )
    # saved: 1,500 read at 0.9 below the input price, less 1,500 written at 0.25 above it
    assert anthropic["dollars_saved"] == pytest.approx((1350 - 375) * IN, abs=1e-6)
    # promptrelay's hit saved, apart, what the answer it replayed cost: $0.002730
    assert (cache["hits"], anthropic["answers"]) == (1, 2)
    assert cache["saved"]["dollars"] == pytest.approx(0.002730, abs=1e-6)


async def test_a_1h_template_with_a_body_marker_writes_at_twice_the_input_price(
    gateway_factory: Any, fake_upstream: Any, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_upstream, tmp_path)
    template = {
        "system": "Answer briefly.",
        "cache": "1h",
        "body": "{{ doc }}{{ cache_breakpoint() }}Question: {{ q }}",
        "variables": ["doc", "q"],
    }
    async with aiohttp.ClientSession() as session:
        async with session.put(gateway.url + "/api/templates/doc", json=template) as response:
            assert response.status == 201
        ask = {"template": "doc", "model": MODEL, "max_tokens": 16}
        variables = {"doc": RULES, "q": "one"}
        answer = await _post(
            session, gateway.url + "/api/generate", {**ask, "variables": variables}
        )
        spent, cache = await _spent_and_saved(session, gateway.url)
    hour = {"type": "ephemeral", "ttl": "1h"}
    assert fake_upstream.stats()["last_cache_control"] == [
        ["system.0", hour],
        ["messages.0.content.0", hour],
    ]
    usage = answer["usage"]
    written = usage["cache_creation_input_tokens"]
    assert written == (len("Answer briefly.") + len(RULES)) // 4  # the fake's count
    assert usage["cache_creation"]["ephemeral_1h_input_tokens"] == written
    by_hand = usage["input_tokens"] * IN + written * 2 * IN + usage["output_tokens"] * OUT
    assert spent == pytest.approx(by_hand, abs=1e-6)
    assert cache["anthropic_prompt_cache"]["written_1h_tokens"] == written
    assert cache["anthropic_prompt_cache"]["dollars_saved"] == pytest.approx(
        -written * IN, abs=1e-6
    )


async def test_prompt_cache_auto_marks_a_long_system_prompt_streamed_and_json(
    gateway_factory: Any, fake_upstream: Any, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_upstream, tmp_path, prompt_cache_auto=True)
    body = {"model": MODEL, "max_tokens": 16, "system": RULES}
    url = gateway.url + "/v1/messages"
    async with aiohttp.ClientSession() as session:
        first = {**body, "stream": True, "messages": [{"role": "user", "content": "one"}]}
        async with session.post(url, json=first, headers=KEY) as response:
            written = _usage_of_stream(await response.text())
        seen = fake_upstream.stats()["last_cache_control"]
        second = {**body, "messages": [{"role": "user", "content": "two"}]}
        read = (await _post(session, url, second))["usage"]
        spent, cache = await _spent_and_saved(session, gateway.url)
    assert seen == [["system.0", {"type": "ephemeral"}]]
    assert written["cache_creation_input_tokens"] == 1500
    assert read["cache_read_input_tokens"] == 1500
    by_hand = (written["input_tokens"] * IN + 1500 * 1.25 * IN + written["output_tokens"] * OUT) + (
        read["input_tokens"] * IN + 1500 * 0.1 * IN + read["output_tokens"] * OUT
    )
    assert spent == pytest.approx(by_hand, abs=1e-6)
    assert cache["anthropic_prompt_cache"]["answers"] == 2  # the stream counted too


async def test_prompt_cache_auto_never_goes_beyond_four_breakpoints(
    gateway_factory: Any, fake_upstream: Any, tmp_path: Path
) -> None:
    gateway = _gateway(gateway_factory, fake_upstream, tmp_path, prompt_cache_auto=True)
    marked = {"type": "text", "text": "part", "cache_control": {"type": "ephemeral"}}
    body = {
        "model": MODEL,
        "max_tokens": 16,
        "system": RULES,
        "messages": [{"role": "user", "content": [marked] * 4}],
    }
    async with aiohttp.ClientSession() as session:
        await _post(session, gateway.url + "/v1/messages", body)
        without = fake_upstream.stats()["last_cache_control"]
        short = {**body, "system": "short", "messages": [{"role": "user", "content": "x"}]}
        await _post(session, gateway.url + "/v1/messages", short)
        short_seen = fake_upstream.stats()["last_cache_control"]
    assert [where for where, _ in without] == [f"messages.0.content.{i}" for i in range(4)]
    assert short_seen == []  # below the model's minimum: forwarded as sent
