"""The pure rules of the server layer's limits (no sockets, no clock)."""

from __future__ import annotations

import pytest

from promptrelay.server.limits import (
    FD_MARGIN,
    MIN_CONNECTIONS,
    Phase,
    ServerLimits,
    default_max_connections,
    time_left,
)
from promptrelay.settings import ConfigError, Settings, load_settings

LIMITS = ServerLimits(head_timeout=10.0, body_idle_timeout=4.0)


def test_a_head_has_its_timeout_from_its_start():
    assert time_left(Phase.HEAD, since=100.0, now=103.0, limits=LIMITS) == 7.0
    assert time_left(Phase.HEAD, since=100.0, now=110.0, limits=LIMITS) == 0.0


def test_a_body_has_its_idle_timeout_from_its_last_chunk():
    assert time_left(Phase.BODY, since=100.0, now=101.0, limits=LIMITS) == 3.0
    assert time_left(Phase.BODY, since=100.0, now=105.0, limits=LIMITS) == -1.0


def test_an_idle_connection_has_no_deadline_of_ours():
    assert time_left(Phase.IDLE, since=0.0, now=1e9, limits=LIMITS) is None


def test_the_watch_never_sleeps_past_the_shorter_timeout():
    assert LIMITS.watch_interval == 4.0


def test_max_connections_default_leaves_the_pools_and_a_margin():
    settings = Settings(max_sockets=50)
    assert default_max_connections(settings, nofile=1024) == 1024 - 50 - FD_MARGIN
    with_redis = Settings(max_sockets=50, redis_enabled=True, redis_max_connections=32)
    assert default_max_connections(with_redis, nofile=1024) == 1024 - 50 - 32 - FD_MARGIN
    assert default_max_connections(settings, nofile=100) == MIN_CONNECTIONS


def test_limits_from_settings():
    settings = Settings(max_header_bytes=8192, head_timeout=5, body_idle_timeout=7)
    limits = ServerLimits.from_settings(settings, nofile=4096)
    assert (limits.max_header_bytes, limits.head_timeout, limits.body_idle_timeout) == (
        8192,
        5.0,
        7.0,
    )
    assert limits.max_connections == 4096 - 50 - FD_MARGIN
    assert ServerLimits.from_settings(Settings(max_connections=9), nofile=4096).max_connections == 9


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_header_bytes", 100),
        ("head_timeout", 0),
        ("body_idle_timeout", -1),
        ("max_connections", 0),
    ],
)
def test_bad_limits_are_config_errors_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name.upper()):
        load_settings(**{name: value})
