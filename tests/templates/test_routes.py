"""Template routes and /api/generate with templates, over HTTP on a real gateway.

The CRUD test runs on SQLite and on the throwaway PostgreSQL cluster.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

GREET = {
    "body": "Write a greeting for {{ who }} in {{ lang }}.",
    "system": "You are {{ persona }}.",
    "model": "claude-haiku-4-5",
    "params": {"max_tokens": 64, "temperature": 0.2},
    "variables": [
        {"name": "who", "required": True},
        {"name": "lang", "default": "English"},
        {"name": "persona", "required": False, "default": "kind"},
    ],
    "description": "greetings",
}


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


async def test_crud_versions_and_render(gateway_factory, fake_upstream, database_url):
    gateway = gateway_factory(
        anthropic_api_key="k", anthropic_base_url=fake_upstream.url, database_url=database_url
    )
    base = f"{gateway.url}/api/templates"
    async with aiohttp.ClientSession() as s:
        first = await s.put(f"{base}/greet", json=GREET)
        assert first.status == 201
        assert await _json(first) == {"name": "greet", "version": 1}
        second = await s.put(f"{base}/greet", json={**GREET, "description": "v2"})
        assert await _json(second) == {"name": "greet", "version": 2}
        await s.put(f"{base}/other", json={"body": "plain"})

        latest = await _json(await s.get(f"{base}/greet"))
        assert latest["version"] == 2 and latest["description"] == "v2"
        assert latest["variables"][1] == {"name": "lang", "required": False, "default": "English"}
        old = await _json(await s.get(f"{base}/greet", params={"version": "1"}))
        assert old["version"] == 1 and old["description"] == "greetings"
        listed = await _json(await s.get(base))
        assert [(t["name"], t["version"]) for t in listed["templates"]] == [
            ("greet", 2),
            ("other", 1),
        ]
        versions = await _json(await s.get(f"{base}/greet/versions"))
        assert [v["version"] for v in versions["versions"]] == [1, 2]

        dry = await s.post(f"{base}/greet/render", json={"variables": {"who": "Ada"}})
        rendered = await _json(dry)
        assert dry.status == 200
        assert rendered["prompt"] == "Write a greeting for Ada in English."
        assert rendered["system"] == "You are kind."
        assert rendered["request"]["model"] == "claude-haiku-4-5"
        assert rendered["request"]["max_tokens"] == 64
        assert rendered["request"]["messages"] == [
            {"role": "user", "content": "Write a greeting for Ada in English."}
        ]
        missing = await s.post(f"{base}/greet/render", json={"variables": {}})
        assert missing.status == 400
        assert "variables.who" in (await _json(missing))["error"]["message"]

        deleted = await s.delete(f"{base}/greet")
        assert deleted.status == 200 and (await _json(deleted))["deleted_versions"] == 2
        gone = await s.get(f"{base}/greet")
        assert gone.status == 404
        assert (await _json(gone))["error"]["type"] == "not_found_error"
        assert (await s.get(f"{base}/greet", params={"version": "1"})).status == 404
        assert (await s.delete(f"{base}/greet")).status == 404
        again = await s.put(f"{base}/greet", json=GREET)
        assert (await _json(again))["version"] == 3
    assert fake_upstream.stats()["by_path"].get("/v1/messages", 0) == 0  # dry runs only


async def test_save_errors_are_400_in_the_error_shape(gateway_factory, tmp_path):
    gateway = gateway_factory(database_url=f"sqlite:///{tmp_path}/t.db")
    base = f"{gateway.url}/api/templates"
    cases = [
        ("t", {"body": "{{ a }} and {{ b }}", "variables": ["a"]}, "variable 'b' is used"),
        ("t", {"body": "ok\n{{ a + }}", "variables": ["a"]}, "syntax error at line 2"),
        ("t", {"body": ""}, "body: required"),
        ("t", {"body": "x", "params": {"api_base": "h"}}, "params.api_base"),
        ("t", {"body": "x", "colour": 1}, "colour: unknown template field"),
        ("bad:name", {"body": "x"}, "template name"),
        (
            "t",
            {"body": "x", "variables": [{"name": "a", "required": True, "default": 1}]},
            "cannot have a default",
        ),
    ]
    async with aiohttp.ClientSession() as s:
        for name, body, expected in cases:
            response = await s.put(f"{base}/{name}", json=body)
            payload = await _json(response)
            assert response.status == 400, (body, payload)
            assert payload["type"] == "error"
            assert payload["error"]["type"] == "invalid_request_error"
            assert expected in payload["error"]["message"], payload
        not_object = await s.put(f"{base}/t", json=["body"])
        assert not_object.status == 400


async def test_writes_are_admin_reads_follow_client_keys(gateway_factory, tmp_path):
    gateway = gateway_factory(
        database_url=f"sqlite:///{tmp_path}/t.db",
        admin_api_key="adm",
        promptrelay_api_keys="client1",
    )
    base = f"{gateway.url}/api/templates"
    admin = {"authorization": "Bearer adm"}
    client = {"x-api-key": "client1"}
    async with aiohttp.ClientSession() as s:
        assert (await s.put(f"{base}/t", json={"body": "x"})).status == 401
        assert (await s.put(f"{base}/t", json={"body": "x"}, headers=client)).status == 403
        assert (await s.put(f"{base}/t", json={"body": "x"}, headers=admin)).status == 201
        assert (await s.delete(f"{base}/t", headers=client)).status == 403
        assert (await s.get(f"{base}/t")).status == 401
        assert (await s.get(f"{base}/t", headers=client)).status == 200
        assert (await s.get(f"{base}/t", headers=admin)).status == 200


async def test_generate_with_a_template(gateway_factory, fake_upstream, tmp_path):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        database_url=f"sqlite:///{tmp_path}/t.db",
    )
    url = f"{gateway.url}/api/generate"
    async with aiohttp.ClientSession() as s:
        await s.put(f"{gateway.url}/api/templates/greet", json=GREET)
        await s.put(f"{gateway.url}/api/templates/greet", json={**GREET, "body": "Hi {{ who }}"})
        call = {"template": "greet", "variables": {"who": "Ada", "lang": "French"}}
        first = await s.post(url, json=call)
        answer = await _json(first)
        assert first.status == 200, answer
        assert answer["template"] == "greet" and answer["template_version"] == 2
        assert answer["model"] == "claude-haiku-4-5"
        assert "Hi Ada" in answer["text"]  # the fake echoes the rendered prompt
        assert answer["cached"] is False
        again = await _json(await s.post(url, json=call))
        assert again["cached"] is True
        pinned = await _json(await s.post(url, json={**call, "version": 1, "model": "m-x"}))
        assert pinned["template_version"] == 1 and pinned["model"] == "m-x"
        assert "Write a greeting for Ada in French." in pinned["text"]
        for bad, expected in [
            ({"template": "greet", "variables": {}}, "variables.who"),
            ({"template": "greet", "prompt": "x"}, "exactly one of prompt, messages or template"),
            ({"template": "nope", "variables": {}}, "template 'nope' does not exist"),
            ({"template": "greet", "version": 0}, "version: must be an integer >= 1"),
            ({"prompt": "x", "variables": {}}, "variables: only used with template"),
            ({"template": "greet", "variables": ["who"]}, "variables: must be an object"),
        ]:
            response = await s.post(url, json=bad)
            payload = await _json(response)
            assert response.status in (400, 404), payload
            assert expected in payload["error"]["message"], payload
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 2


async def test_lookups_go_through_the_cache(gateway_factory, tmp_path):
    gateway = gateway_factory(database_url=f"sqlite:///{tmp_path}/t.db")
    async with aiohttp.ClientSession() as s:
        await s.put(f"{gateway.url}/api/templates/t", json={"body": "x"})
        for _ in range(3):
            assert (await s.get(f"{gateway.url}/api/templates/t")).status == 200
        stats = await _json(await s.get(f"{gateway.url}/api/cache/stats"))
    counts = stats["by_content_type"]["template_content"]
    assert counts == {"hits": 2, "misses": 1}
    runtime = gateway.app.runtime
    assert runtime is not None
    entry = runtime.cache.memory.get_now("pr:templates:template_content:t@latest")
    assert entry is not None and entry.content_type == "template_content"
    ttl = (entry.expires_at or 0) - time.time()
    assert 3500 < ttl <= 3600  # the template_content TTL


async def test_a_save_reaches_every_process(gateway_factory, redis_server, tmp_path):
    shared = {
        "database_url": f"sqlite:///{tmp_path}/shared.db",
        "redis_enabled": True,
        "redis_url": redis_server.url,
    }
    one, two = gateway_factory(**shared), gateway_factory(**shared)
    async with aiohttp.ClientSession() as s:
        await s.put(f"{one.url}/api/templates/t", json={"body": "first"})
        seen = await _json(await s.get(f"{two.url}/api/templates/t"))
        assert seen["body"] == "first"  # now cached in two's memory tier for an hour
        await s.put(f"{one.url}/api/templates/t", json={"body": "second"})
        deadline = time.monotonic() + 3
        while True:
            seen = await _json(await s.get(f"{two.url}/api/templates/t"))
            if seen["body"] == "second" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert seen["body"] == "second" and seen["version"] == 2
        await s.delete(f"{one.url}/api/templates/t")
        deadline = time.monotonic() + 3
        while (status := (await s.get(f"{two.url}/api/templates/t")).status) != 404:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)


async def test_batch_items_use_templates_like_generate(gateway_factory, fake_upstream, tmp_path):
    gateway = gateway_factory(
        anthropic_api_key="k",
        anthropic_base_url=fake_upstream.url,
        database_url=f"sqlite:///{tmp_path}/t.db",
    )
    async with aiohttp.ClientSession() as s:
        await s.put(f"{gateway.url}/api/templates/greet", json=GREET)
        items = [
            {"template": "greet", "variables": {"who": "Ada"}},
            {"template": "greet", "variables": {}},  # missing a required variable
            {"template": "greet", "variables": {"who": "Ada"}},  # same as the first
        ]
        response = await s.post(f"{gateway.url}/api/generate/batch", json={"requests": items})
        answer = await _json(response)
        single = await _json(
            await s.post(f"{gateway.url}/api/generate", json=items[0])  # after the batch
        )
    assert response.status == 200, answer
    first, missing, same = answer["results"]
    assert first["ok"] and first["result"]["template"] == "greet"
    assert first["result"]["template_version"] == 1
    assert "Ada" in first["result"]["text"]
    assert not missing["ok"] and "variables.who" in missing["error"]["message"]
    assert same["ok"] and same["result"]["text"] == first["result"]["text"]
    assert single["cached"] is True and single["template"] == "greet"
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 1
