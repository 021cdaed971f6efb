"""Prompt-cache usage priced with Anthropic's multipliers, JSON and streamed, end to end:
the fake upstream's prompt cache writes then reads a long system prompt, a KEYS_FILE
key's dollar counter must equal the dollars computed here by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from promptrelay.devtools.fake_cache import FakePromptCache

HAIKU = "claude-3-haiku-20240307"  # $0.25 input, $1.25 output per million tokens
SYSTEM = [{"type": "text", "text": "rules " * 1000, "cache_control": {"type": "ephemeral"}}]


def _body(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": HAIKU,
        "max_tokens": 16,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def test_fake_prompt_cache_writes_reads_and_skips_short_prefixes() -> None:
    now = [0.0]
    cache = FakePromptCache(clock=lambda: now[0])
    first = cache.lookup("k", _body("a"), min_tokens=1024)
    assert first.created == 1500 and first.read == 0  # 6000 characters / 4
    assert cache.lookup("k", _body("b"), min_tokens=1024).read == 1500
    assert cache.lookup("other-key", _body("b"), min_tokens=1024).created == 1500
    now[0] += 301
    assert cache.lookup("k", _body("c"), min_tokens=1024).created == 1500  # 5 min passed
    assert not cache.lookup("k", _body("c"), min_tokens=2048).cached  # below the minimum
    long_ttl = [{**SYSTEM[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    hour = cache.lookup("k", {**_body("d"), "system": long_ttl}, min_tokens=1024)
    assert hour.created_1h == hour.created == 1500


def _usage_of_stream(text: str) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        data = json.loads(lines["data"])
        if lines["event"] == "message_start":
            usage = dict(data["message"]["usage"])
        elif lines["event"] == "message_delta":
            usage["output_tokens"] = data["usage"]["output_tokens"]
    return usage


def _by_hand(usage: dict[str, Any]) -> float:
    per_in, per_out = 0.25 / 1e6, 1.25 / 1e6
    return float(
        usage["input_tokens"] * per_in
        + usage.get("cache_creation_input_tokens", 0) * 1.25 * per_in
        + usage.get("cache_read_input_tokens", 0) * 0.1 * per_in
        + usage["output_tokens"] * per_out
    )


async def test_cache_tokens_are_priced_with_the_multipliers_json_and_streamed(
    gateway_factory: Any, fake_upstream: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys:\n  - {name: team, key: k-team, dollars_per_day: 100}\n")
    gateway = gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, keys_file=str(keys)
    )
    headers = {"x-api-key": "k-team"}
    async with aiohttp.ClientSession() as session:
        url = gateway.url + "/v1/messages"
        async with session.post(url, json=_body("first"), headers=headers) as response:
            written = (await response.json())["usage"]
        async with session.post(url, json=_body("second", stream=True), headers=headers) as r:
            read = _usage_of_stream(await r.text())
        async with session.get(gateway.url + "/api/keys") as response:
            (team,) = (await response.json())["keys"]
    assert written["cache_creation_input_tokens"] == 1500 and "cache_read_input_tokens" in written
    assert read["cache_read_input_tokens"] == 1500
    spent = team["usage"]["dollars_per_day"]["used"]
    assert spent == pytest.approx(_by_hand(written) + _by_hand(read), abs=1e-6)
    # Plain input pricing would have charged the 3,000 cached tokens at the full rate.
    assert spent < (written["input_tokens"] + read["input_tokens"] + 3000) * 0.25 / 1e6
