"""/docs from local files; the OpenAPI schema documents the hot routes too."""

from __future__ import annotations

import re

import aiohttp


async def test_the_schema_documents_the_hot_routes(gateway_factory):
    gateway = gateway_factory()
    async with aiohttp.ClientSession() as session:
        schema = await (await session.get(f"{gateway.url}/openapi.json")).json()
    messages = schema["paths"]["/v1/messages"]["post"]
    generate = schema["paths"]["/api/generate"]["post"]
    body_ref = messages["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref.endswith("/MessagesRequest")
    answer = messages["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/Message")
    assert "text/event-stream" in messages["responses"]["200"]["content"]
    assert messages["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorEnvelope"
    )
    components = schema["components"]["schemas"]
    assert {"model", "max_tokens", "messages"} <= set(components["MessagesRequest"]["required"])
    assert {"text", "cached", "offline"} <= set(components["GenerateAnswer"]["properties"])
    assert generate["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/GenerateRequest"
    )
    assert "/api/dashboard" in schema["paths"]


async def test_docs_reference_only_local_assets(gateway_factory):
    gateway = gateway_factory()
    async with aiohttp.ClientSession() as session:
        page = await (await session.get(f"{gateway.url}/docs")).text()
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
        assert urls and all(url.startswith("/") for url in urls), urls
        for url in urls:
            async with session.get(gateway.url + url) as asset:
                assert asset.status == 200 and await asset.read(), url
        async with session.get(f"{gateway.url}/docs/assets/../../etc/passwd") as missing:
            assert missing.status == 404
