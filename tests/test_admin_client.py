"""What `promptrelay status` and `cache stats` print: the gateway's strings are data."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from promptrelay.admin_client import render_stats, render_status

HOSTILE = "[/] [bold]x[/bold] [red]"


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def test_status_prints_markup_in_the_gateways_strings_as_text():
    health: dict[str, Any] = {
        "mode": HOSTILE,
        "version": "0",
        "breaker": {"state": HOSTILE},
        "redis": "up",
        "upstream": {"pool": {"in_use": 0, "waiting": 0}, "base_url": "http://x/" + HOSTILE},
    }
    performance: dict[str, Any] = {
        "cache": {"hit_ratio": 0.5, "hits": 1, "misses": 1},
        "requests": {"total": 2, "errors": 0},
        "alerts": {"active": [{"key": HOSTILE, "severity": "warning", "message": HOSTILE}]},
        "recommendations": [{"area": HOSTILE, "severity": "info", "message": HOSTILE}],
    }
    console, out = _console()
    render_status(health, performance, console)
    assert out.getvalue().count(HOSTILE) >= 5  # mode, breaker, alert key and text, advice


def test_cache_stats_prints_markup_in_names_as_text():
    stats: dict[str, Any] = {
        "namespaces": {HOSTILE: {"entries": 1, "bytes": 10}},
        "savings": {"tokens_saved": 0, "upstream_seconds_saved": 0},
        "hits": 0,
        "misses": 0,
        "hit_ratio": 0.0,
        "entries": 1,
        "bytes": 10,
        "redis_state": HOSTILE,
    }
    console, out = _console()
    render_stats(stats, console)
    assert out.getvalue().count(HOSTILE) == 2
