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


def test_redis_topologies_from_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "10.0.0.1:7000, 10.0.0.2:7001")
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    monkeypatch.setenv("REDIS_USERNAME", "gateway")
    settings = load_settings()
    assert settings.redis_topology == "cluster"
    assert settings.redis_cluster_nodes == ("10.0.0.1:7000", "10.0.0.2:7001")
    monkeypatch.delenv("REDIS_CLUSTER_NODES")
    monkeypatch.setenv("REDIS_SENTINELS", "s1:26379,s2:26379")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentinel-pw")
    settings = load_settings()
    assert settings.redis_topology == "sentinel"
    assert "sentinel-pw" not in repr(settings)
    monkeypatch.delenv("REDIS_SENTINELS")
    assert load_settings().redis_topology == "single"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_URL": "redis://h:1/0", "REDIS_CLUSTER_NODES": "h:7000"}, ("REDIS_URL",)),
        ({"REDIS_HOST": "h", "REDIS_SENTINELS": "h:26379"}, ("REDIS_HOST", "REDIS_SENTINELS")),
        (
            {"REDIS_CLUSTER_NODES": "h:7000", "REDIS_SENTINELS": "h:26379"},
            ("REDIS_CLUSTER_NODES", "REDIS_SENTINELS"),
        ),
    ],
)
def test_two_topologies_are_a_start_up_error_naming_both(monkeypatch, env, named):
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "m")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    for name in (*named, *env):
        assert name in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REDIS_CLUSTER_NODES", "h7000", "REDIS_CLUSTER_NODES"),
        ("REDIS_SENTINELS", "h:99999", "REDIS_SENTINELS"),
        ("REDIS_SENTINELS", "h:26379", "REDIS_SENTINEL_MASTER"),
    ],
)
def test_bad_topology_values_name_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=expected):
        load_settings()


def test_tls_turns_the_single_url_into_rediss():
    assert load_settings(redis_tls=True).redis_location().startswith("rediss://")
