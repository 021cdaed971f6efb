"""KEYS_FILE: client keys with quotas and budgets, through a real server and fake upstream."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from promptrelay.core.keyfile import KeysFileError, load_keys_file, parse_keys
from promptrelay.core.quotas import MemoryCounters, Quotas, dollars, windows
from promptrelay.errors import RateLimited
from promptrelay.settings import ConfigError, load_settings

HAIKU = "claude-3-haiku-20240307"  # built-in price: $0.25 in, $1.25 out per million


def _body(text: str, model: str = HAIKU, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.yaml"


def _start(gateway_factory: Any, fake_upstream: Any, keys_file: str) -> Any:
    return gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_upstream.url,
        keys_file=keys_file,
        upstream_retries=0,
    )


async def _post(session: aiohttp.ClientSession, url: str, key: str, body: Any) -> Any:
    async with session.post(url + "/v1/messages", json=body, headers={"x-api-key": key}) as r:
        return r.status, r.headers.copy(), await r.json()


def test_a_bad_file_names_the_file_and_the_field(keys_path: Path) -> None:
    path = _write(keys_path, "keys:\n  - name: a\n    key: k1\n    requests_per_minute: -3\n")
    with pytest.raises(KeysFileError, match=r"keys.yaml: keys\[0\]\.requests_per_minute"):
        load_keys_file(path)
    with pytest.raises(ConfigError, match="KEYS_FILE"):
        load_settings(keys_file=path)
    _write(keys_path, "keys:\n  - name: a\n    key: k1\n    key_sha256: " + "0" * 64 + "\n")
    with pytest.raises(KeysFileError, match="exactly one of key and key_sha256"):
        load_keys_file(path)
    _write(keys_path, "keys:\n  - name: a\n    key: k1\n    colour: red\n")
    with pytest.raises(KeysFileError, match=r"keys\[0\]\.colour: unknown field"):
        load_keys_file(path)


def test_keys_file_counts_for_the_open_access_rule(keys_path: Path) -> None:
    path = _write(keys_path, "keys:\n  - name: a\n    key: k1\n")
    assert load_settings(host="0.0.0.0", keys_file=path).keys_file == path
    with pytest.raises(ConfigError, match="PROMPTRELAY_API_KEYS"):
        load_settings(host="0.0.0.0")


def test_dollars_use_anthropic_cache_multipliers() -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 200,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},
    }
    # $3 / $15 per million: 1000 + 1.25*2000 + 2*1000 + 0.1*10000 = 6500 input-equivalents.
    assert dollars(usage, (3.0, 15.0)) == pytest.approx((6500 * 3 + 200 * 15) / 1e6)


def test_windows_are_utc_minute_day_and_calendar_month() -> None:
    now = 1_769_817_599.5  # 2026-01-30T23:59:59.5Z
    spans = windows(now)
    assert spans["minute"].left == pytest.approx(0.5)
    assert spans["day"].label == "20260130" and spans["day"].left == pytest.approx(0.5)
    assert spans["month"].label == "202601"
    assert spans["month"].left == pytest.approx(0.5 + 86400)  # January has a 31st


async def test_ten_per_minute_the_eleventh_is_429_and_hits_count(
    gateway_factory: Any, fake_upstream: Any, keys_path: Path
) -> None:
    path = _write(
        keys_path, "keys:\n  - name: team\n    key: k-team\n    requests_per_minute: 10\n"
    )
    gateway = _start(gateway_factory, fake_upstream, path)
    async with aiohttp.ClientSession() as session:
        seen = []
        for _ in range(10):
            status, headers, _ = await _post(session, gateway.url, "k-team", _body("same"))
            seen.append((status, headers.get("x-cache")))
        assert seen == [(200, "MISS")] + [(200, "HIT")] * 9
        status, headers, body = await _post(session, gateway.url, "k-team", _body("same"))
    assert status == 429
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "requests_per_minute" in body["error"]["message"] and "team" in body["error"]["message"]
    assert 1 <= int(headers["retry-after"]) <= 60
    assert "x-should-retry" not in headers
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1


async def test_dollar_cap_refuses_once_spent_and_hits_cost_nothing(
    gateway_factory: Any, fake_upstream: Any, keys_path: Path
) -> None:
    path = _write(
        keys_path,
        "keys:\n"
        "  - {name: rich, key: k-rich, dollars_per_day: 100, tokens_per_day: 1000000}\n"
        "  - {name: poor, key: k-poor, dollars_per_day: 0.00001}\n",
    )
    gateway = _start(gateway_factory, fake_upstream, path)
    async with aiohttp.ClientSession() as session:
        status, _, first = await _post(session, gateway.url, "k-rich", _body("priced " * 40))
        assert status == 200
        for _ in range(3):
            status, headers, _ = await _post(session, gateway.url, "k-rich", _body("priced " * 40))
            assert (status, headers["x-cache"]) == (200, "HIT")
        usage = first["usage"]
        async with session.get(gateway.url + "/api/keys") as response:
            listed = await response.json()
        # The poor key's first request crosses its cap; the next one is refused.
        assert (await _post(session, gateway.url, "k-poor", _body("one " * 40)))[0] == 200
        status, headers, body = await _post(session, gateway.url, "k-poor", _body("two"))
    rich = next(k for k in listed["keys"] if k["name"] == "rich")
    by_hand = (usage["input_tokens"] * 0.25 + usage["output_tokens"] * 1.25) / 1e6
    assert rich["usage"]["dollars_per_day"]["used"] == pytest.approx(by_hand, abs=1e-6)
    tokens = usage["input_tokens"] + usage["output_tokens"]
    assert rich["usage"]["tokens_per_day"]["used"] == tokens  # the hits added nothing
    assert "k-rich" not in str(listed) and "k-poor" not in str(listed)
    assert status == 429 and "dollars_per_day" in body["error"]["message"]
    assert int(headers["retry-after"]) > 60 and headers["x-should-retry"] == "false"


async def test_models_outside_the_list_and_unpriced_models_under_a_cap_are_403(
    gateway_factory: Any, fake_upstream: Any, keys_path: Path
) -> None:
    path = _write(
        keys_path,
        "keys:\n"
        f"  - {{name: narrow, key: k-narrow, models: [{HAIKU}]}}\n"
        "  - {name: capped, key: k-capped, dollars_per_month: 5}\n",
    )
    gateway = _start(gateway_factory, fake_upstream, path)
    async with aiohttp.ClientSession() as session:
        status, _, body = await _post(
            session, gateway.url, "k-narrow", _body("x", model="claude-sonnet-4-6")
        )
        assert status == 403 and body["error"]["type"] == "permission_error"
        assert (await _post(session, gateway.url, "k-narrow", _body("x")))[0] == 200
        status, _, body = await _post(
            session, gateway.url, "k-capped", _body("x", model="claude-unknown-9")
        )
    assert status == 403 and "no price" in body["error"]["message"]


async def test_reload_removes_a_key_at_once_and_a_bad_reload_keeps_the_old(
    gateway_factory: Any, fake_upstream: Any, keys_path: Path
) -> None:
    hashed = hashlib.sha256(b"k-hashed").hexdigest()
    path = _write(
        keys_path,
        f"keys:\n  - {{name: a, key: k-a}}\n  - {{name: h, key_sha256: {hashed}}}\n",
    )
    gateway = _start(gateway_factory, fake_upstream, path)
    async with aiohttp.ClientSession() as session:
        assert (await _post(session, gateway.url, "k-a", _body("a")))[0] == 200
        assert (await _post(session, gateway.url, "k-hashed", _body("h")))[0] == 200
        _write(keys_path, "keys:\n  - {name: a, key: k-a, requests_per_minute: nope}\n")
        async with session.post(gateway.url + "/api/keys/reload", json={}) as response:
            assert response.status == 400
            assert "requests_per_minute" in (await response.json())["error"]["message"]
        assert (await _post(session, gateway.url, "k-hashed", _body("h")))[0] == 200
        _write(keys_path, "keys:\n  - {name: a, key: k-a}\n")
        async with session.post(gateway.url + "/api/keys/reload", json={}) as response:
            assert response.status == 200
        status, _, body = await _post(session, gateway.url, "k-hashed", _body("h"))
        assert status == 401 and body["error"]["type"] == "authentication_error"
        assert (await _post(session, gateway.url, "k-a", _body("a")))[0] == 200


async def test_memory_counters_refuse_after_the_cap_with_a_fake_clock() -> None:
    clock = [1_769_817_600.0]  # a UTC midnight
    counters = MemoryCounters(clock=lambda: clock[0])
    quotas = Quotas(counters, lambda model: (1.0, 1.0), clock=lambda: clock[0])
    (entry,) = parse_keys({"keys": [{"name": "t", "key": "k", "tokens_per_minute": 100}]}).values()
    await quotas.admit(entry, "m")
    await quotas.charge(entry, "m", {"input_tokens": 90, "output_tokens": 20})
    with pytest.raises(RateLimited, match="tokens_per_minute") as refused:
        await quotas.admit(entry, "m")
    assert refused.value.retry_after == pytest.approx(60)
    clock[0] += 60
    await quotas.admit(entry, "m")  # the next minute's window


async def test_the_file_reloads_on_change(
    gateway_factory: Any, fake_upstream: Any, keys_path: Path
) -> None:
    path = _write(keys_path, "keys:\n  - {name: a, key: k-a}\n  - {name: b, key: k-b}\n")
    gateway = _start(gateway_factory, fake_upstream, path)
    async with aiohttp.ClientSession() as session:
        assert (await _post(session, gateway.url, "k-b", _body("b")))[0] == 200
        _write(keys_path, "keys:\n  - {name: a, key: k-a}\n")
        watcher = gateway.app.runtime.keys_watcher
        watcher.check()  # what its own loop does every 2 s (it may have been first)
        status, _, _ = await _post(session, gateway.url, "k-b", _body("b"))
    assert status == 401
