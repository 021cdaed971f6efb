"""Settings: one validated object; bad values fail at start-up naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from promptrelay.settings import ConfigError, load_settings


def test_defaults_match_the_design_table():
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.offline
    assert (settings.max_sockets, settings.max_free_sockets) == (50, 10)
    assert (settings.batch_max_size, settings.batch_window_ms) == (10, 100)
    assert (settings.circuit_failure_threshold, settings.circuit_reset_timeout) == (5, 60)
    assert settings.circuit_window == 300
    assert (settings.gc_threshold, settings.memory_threshold) == (0.7, 0.8)
    assert settings.max_body_bytes == 32 * 1024 * 1024
    assert settings.memory_cache_max_bytes == 67108864
    assert settings.cache_ttl_claude_response == 1800
    assert (settings.upstream_retries, settings.retry_max_wait) == (2, 60)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("MAX_SOCKETS", "0"),
        ("GC_THRESHOLD", "1.5"),
        ("REDIS_ENABLED", "perhaps"),
        ("ANTHROPIC_BASE_URL", "ftp://x"),
        ("ANTHROPIC_BASE_URL", "http://proxy/anthropic/../other"),
        ("ANTHROPIC_BASE_URL", "http://proxy/./anthropic"),
        ("ANTHROPIC_BASE_URL", "http://proxy/anthropic%2f.."),
        ("ANTHROPIC_BASE_URL", "http://proxy/anthropic?x=1"),
        ("ANTHROPIC_BASE_URL", "http://proxy/anthropic#x"),
        ("CIRCUIT_RESET_TIMEOUT", "-1"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_open_host_needs_client_keys_or_explicit_consent(monkeypatch):
    monkeypatch.setenv("HOST", "0.0.0.0")
    with pytest.raises(ConfigError, match="PROMPTRELAY_API_KEYS"):
        load_settings()
    monkeypatch.setenv("ALLOW_OPEN_ACCESS", "true")
    assert load_settings().host == "0.0.0.0"
    monkeypatch.delenv("ALLOW_OPEN_ACCESS")
    monkeypatch.setenv("PROMPTRELAY_API_KEYS", "a, b ,")
    keys = load_settings().promptrelay_api_keys
    assert [key.get_secret_value() for key in keys] == ["a", "b"]


def test_a_base_url_may_have_a_path_prefix(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://proxy.internal:8080/anthropic/")
    assert load_settings().anthropic_base_url == "http://proxy.internal:8080/anthropic"


def test_secrets_do_not_print(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-very-secret")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("METRICS_TOKEN", "scrape-token")
    text = repr(load_settings())
    assert "sk-very-secret" not in text
    assert "hunter2" not in text
    assert "scrape-token" not in text


def test_cli_exits_2_with_the_variable_name(monkeypatch):
    monkeypatch.setenv("PORT", "nope")
    result = subprocess.run(
        [sys.executable, "-m", "promptrelay", "serve"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "PORT" in result.stderr
