"""`promptrelay status` and `promptrelay cache stats|clear`: a running gateway, read over HTTP.

Every call sends the admin key (when given) as a Bearer header and the
`X-Promptrelay-Admin` header that admin writes require. Every string the gateway sends
is escaped before rich renders it: it is data, never markup (a `[/]` in an alert would
otherwise stop the command with a MarkupError).
"""

from __future__ import annotations

from typing import Any

import aiohttp
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from promptrelay.api.sameorigin import ADMIN_HEADER

__all__ = ["AdminError", "admin_headers", "call", "render_stats", "render_status"]

_TIMEOUT = aiohttp.ClientTimeout(total=30)
_STATE_STYLE = {"closed": "green", "up": "green", "open": "red", "down": "red"}


class AdminError(Exception):
    """The gateway refused or could not be reached; the message says which and why."""


def admin_headers(admin_key: str | None) -> dict[str, str]:
    headers = {ADMIN_HEADER: "1"}
    if admin_key:
        headers["authorization"] = f"Bearer {admin_key}"
    return headers


async def call(
    url: str, path: str, admin_key: str | None, body: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """GET (or POST `body`) one admin route; None when it answers 404 (telemetry off)."""
    method = "GET" if body is None else "POST"
    try:
        async with (
            aiohttp.ClientSession(timeout=_TIMEOUT, headers=admin_headers(admin_key)) as session,
            session.request(method, url.rstrip("/") + path, json=body) as response,
        ):
            answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise AdminError(f"{url}: {type(error).__name__}: {error}") from None
    if response.status == 404:
        return None
    if response.status != 200:
        message = answer.get("error", {}).get("message", answer) if isinstance(answer, dict) else ""
        raise AdminError(f"{path}: {response.status} {message}")
    return answer if isinstance(answer, dict) else {}


def _text(value: object) -> str:
    """A value from the gateway, safe inside rich markup."""
    return escape(str(value))


def _state(value: object) -> str:
    style = _STATE_STYLE.get(str(value), "yellow")
    return f"[{style}]{_text(value)}[/]"


def render_status(
    health: dict[str, Any], performance: dict[str, Any] | None, console: Console
) -> None:
    """One screen: mode, hit ratio, breaker, Redis, alerts, the top recommendation."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    pool = health["upstream"]["pool"]
    grid.add_row("mode", _text(health["mode"]))
    grid.add_row("breaker", _state(health["breaker"].get("state", "closed")))
    grid.add_row("redis", _state(health["redis"]))
    grid.add_row("upstream pool", _text(f"{pool['in_use']} in use, {pool['waiting']} waiting"))
    parts: list[Any] = [grid]
    if performance is None:
        grid.add_row("telemetry", "off: no hit ratio, alerts or recommendations")
    else:
        cache, requests = performance["cache"], performance["requests"]
        grid.add_row(
            "hit ratio",
            f"{cache['hit_ratio']:.1%} ({cache['hits']} hits, {cache['misses']} misses)",
        )
        grid.add_row("requests", f"{requests['total']} ({requests['errors']} errors)")
        parts += [_alerts(performance["alerts"]["active"]), _advice(performance)]
    title = _text(f"promptrelay {health.get('version', '')} at {health['upstream']['base_url']}")
    console.print(Panel(Group(*parts), title=title, expand=False))


def _alerts(active: list[dict[str, Any]]) -> Any:
    if not active:
        return "[green]no active alert[/]"
    table = Table("alert", "severity", "message", title="active alerts", title_justify="left")
    for alert in active:
        table.add_row(_text(alert["key"]), _text(alert["severity"]), _text(alert["message"]))
    return table


def _advice(performance: dict[str, Any]) -> str:
    advice = performance.get("recommendations") or []
    if not advice:
        return "recommendation: none"
    top = advice[0]
    area, severity, message = (_text(top[name]) for name in ("area", "severity", "message"))
    return f"recommendation ([bold]{area}[/], {severity}): {message}"


def render_stats(stats: dict[str, Any], console: Console) -> None:
    table = Table("namespace", "entries", "bytes", title="memory tier by namespace")
    for name, counts in stats.get("namespaces", {}).items():
        table.add_row(_text(name), _text(counts["entries"]), f"{counts['bytes']:,}")
    saved = stats["savings"]
    console.print(
        f"hits {stats['hits']}, misses {stats['misses']}, hit ratio {stats['hit_ratio']:.1%}; "
        f"{stats['entries']} entries, {stats['bytes']:,} bytes in memory; "
        f"redis {_text(stats['redis_state'])}"
    )
    console.print(
        f"saved {saved['tokens_saved']:,} tokens, "
        f"{saved['upstream_seconds_saved']:,} s of upstream time"
    )
    console.print(table)
