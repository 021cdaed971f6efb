"""Version numbers outside 1..2**31-1 (PostgreSQL's int4) are a 400 naming `version`, on
every route that takes one and on both back ends; the largest valid number is a plain
404. (Before the bound, PostgreSQL answered 2**40 with a DataError -> 503.)"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from promptrelay.errors import InvalidRequest
from promptrelay.templates.model import MAX_VERSION, check_version

_TOO_BIG = (MAX_VERSION + 1, 2**40, 2**64)


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await response.text()
    try:
        return response.status, orjson.loads(text)
    except orjson.JSONDecodeError:
        return response.status, text


def _assert_names_version(status: int, payload: Any) -> None:
    assert status == 400, payload
    assert payload["error"]["type"] == "invalid_request_error", payload
    assert "version" in payload["error"]["message"], payload


async def test_out_of_range_versions_are_400_on_every_route(
    gateway_factory, fake_upstream, database_url
):
    gateway = gateway_factory(
        anthropic_api_key="k", anthropic_base_url=fake_upstream.url, database_url=database_url
    )
    base = f"{gateway.url}/api/templates"
    generate = f"{gateway.url}/api/generate"
    async with aiohttp.ClientSession() as s:
        saved = await s.put(f"{base}/t", json={"body": "Hi {{ who }}", "variables": ["who"]})
        assert saved.status == 201, await saved.text()
        for version in _TOO_BIG:
            got = await s.get(f"{base}/t", params={"version": str(version)})
            _assert_names_version(*await _answer(got))
            call = {"template": "t", "version": version, "variables": {"who": "Ada"}}
            _assert_names_version(*await _answer(await s.post(generate, json=call)))
            dry = await s.post(f"{base}/t/render", json={"version": version})
            _assert_names_version(*await _answer(dry))

        # The bound itself is a valid number that names no version: 404, not 400 or 503.
        status, payload = await _answer(await s.get(f"{base}/t", params={"version": MAX_VERSION}))
        assert status == 404, payload
        call = {"template": "t", "version": MAX_VERSION, "variables": {"who": "Ada"}}
        status, payload = await _answer(await s.post(generate, json=call))
        assert status == 404, payload
        status, payload = await _answer(await s.post(f"{base}/t/render", json={"version": 1}))
        assert status == 400 and "variables.who" in payload["error"]["message"], payload
    assert fake_upstream.stats()["by_path"].get("/v1/messages", 0) == 0


def test_check_version_accepts_exactly_one_to_the_int4_bound():
    # TemplateService.get runs this too, for callers that bypass the routes' parsing.
    assert [check_version(v) for v in (None, 1, MAX_VERSION)] == [None, 1, MAX_VERSION]
    for bad in (0, -1, MAX_VERSION + 1, 2**64):
        with pytest.raises(InvalidRequest, match="version: must be an integer >= 1"):
            check_version(bad)
