"""`promptrelay status` and `promptrelay cache stats|clear|warm` against a live gateway."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from typer.testing import CliRunner

from promptrelay.cli import app


def _body(text: str) -> dict[str, object]:
    return {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}


async def _send(url: str, bodies: list[dict[str, object]]) -> None:
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(f"{url}/v1/messages", json=body) as response:
                await response.read()


def test_status_shows_a_running_gateway(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, admin_api_key="adm"
    )
    asyncio.run(_send(gateway.url, [_body("a"), _body("a"), _body("a"), _body("b")]))
    runner = CliRunner()
    shown = runner.invoke(app, ["status", "--url", gateway.url], env={"ADMIN_API_KEY": "adm"})
    assert shown.exit_code == 0, shown.output
    for expected in ("mode", "live", "hit ratio", "50.0% (2 hits, 2 misses)", "breaker"):
        assert expected in shown.output
    assert "closed" in shown.output and "disabled" in shown.output  # breaker, Redis
    assert "recommendation" in shown.output
    refused = runner.invoke(app, ["status", "--url", gateway.url, "--admin-key", "wrong"])
    assert refused.exit_code == 1
    assert "401" in refused.output


def test_cache_stats_warm_and_clear(gateway_factory, fake_upstream, tmp_path):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    path = tmp_path / "prompts.jsonl"
    lines = [orjson.dumps(_body(f"warm {i}")).decode() for i in range(5)]
    path.write_text("\n".join([*lines, '{"model": "m"}']) + "\n")
    runner = CliRunner()
    url = ["--url", gateway.url]
    warmed = runner.invoke(app, ["cache", "warm", str(path), *url, "--chunk", "2"])
    assert warmed.exit_code == 1  # the last line is not a valid request
    assert "stored 5, already cached 0, failed 1" in warmed.output
    assert "request 6:" in warmed.output
    again = runner.invoke(app, ["cache", "warm", str(path), *url])
    assert "stored 0, already cached 5, failed 1" in again.output

    stats = runner.invoke(app, ["cache", "stats", *url])
    assert stats.exit_code == 0, stats.output
    assert "default" in stats.output and "5 entries" in stats.output

    kept = runner.invoke(app, ["cache", "clear", *url], input="n\n")
    assert kept.exit_code == 1 and "Aborted" in kept.output
    cleared = runner.invoke(app, ["cache", "clear", *url, "--yes"])
    assert cleared.exit_code == 0, cleared.output
    assert "removed 5 entries matching pr:*:*:*" in cleared.output
