"""`promptrelay cache warm FILE.jsonl` against a real server."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from typer.testing import CliRunner

from promptrelay.cli import app


def _line(text: str) -> str:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    return orjson.dumps(body).decode()


def test_cache_warm_command_fills_the_cache(gateway_factory, fake_upstream, tmp_path):
    gateway = gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, admin_api_key="adm"
    )
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([_line("a"), _line("b"), "", _line("c")]) + "\n")
    runner = CliRunner()
    args = ["cache", "warm", str(path), "--url", gateway.url, "--chunk", "2"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1
    assert "401" in refused.output
    result = runner.invoke(app, [*args, "--admin-key", "adm"])
    assert result.exit_code == 0, result.output
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 3
    assert asyncio.run(_x_cache(gateway.url, orjson.loads(_line("b")))) == "HIT"


async def _x_cache(url: str, body: dict[str, object]) -> str:
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{url}/v1/messages", json=body)
        return response.headers["x-cache"]
