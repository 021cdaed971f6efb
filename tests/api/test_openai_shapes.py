"""Generated Chat Completions shapes against a real promptrelay and the strict fake:
valid messages, content parts and tools get 200; invalid ones a 4xx; never a 5xx."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "claude-sonnet-4-6"
PNG = "data:image/png;base64,iVBORw0KGgo="
words = st.text(alphabet="abcdefgh xyz", min_size=1, max_size=12).filter(str.strip)
ids = st.text(alphabet="abcdef0123456789", min_size=4, max_size=8).map(lambda s: "call_" + s)
json_args = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers() | words, max_size=3)

parts = st.one_of(
    words.map(lambda t: {"type": "text", "text": t}),
    st.just({"type": "image_url", "image_url": {"url": PNG}}),
    st.just({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}),
)
user_content = words | st.lists(parts, min_size=1, max_size=3)
system = st.sampled_from(["system", "developer"]).flatmap(
    lambda role: words.map(lambda text: {"role": role, "content": text})
)


@st.composite
def tool_round(draw: Any) -> list[dict[str, Any]]:
    """An assistant turn calling tools, then one tool message per call."""
    call_ids = draw(st.lists(ids, min_size=1, max_size=3, unique=True))
    calls = [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps(draw(json_args))},
        }
        for call_id in call_ids
    ]
    text = draw(st.none() | words)
    results = [{"role": "tool", "tool_call_id": c, "content": draw(words)} for c in call_ids]
    return [{"role": "assistant", "content": text, "tool_calls": calls}, *results]


@st.composite
def valid_request(draw: Any) -> dict[str, Any]:
    messages: list[dict[str, Any]] = draw(st.lists(system, max_size=2))
    messages.append({"role": "user", "content": draw(user_content)})
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            messages += draw(tool_round())
        else:
            messages.append({"role": "assistant", "content": draw(words)})
        messages.append({"role": "user", "content": draw(user_content)})
    body: dict[str, Any] = {"model": MODEL, "messages": messages}
    if draw(st.booleans()):
        body["tools"] = [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ]
        body["tool_choice"] = draw(st.sampled_from(["auto", "none", "required"]))
    return body


def _break(body: dict[str, Any], how: str) -> dict[str, Any]:
    messages = body["messages"]
    last = messages[-1]
    breakages: dict[str, Any] = {
        "role": lambda: messages.append({"role": "wizard", "content": "x"}),
        "content_type": lambda: last.update(content=7),
        "empty_content": lambda: last.update(content=""),
        "empty_parts": lambda: last.update(content=[]),
        "part_type": lambda: last.update(content=[{"type": "input_audio", "input_audio": {}}]),
        "image_url": lambda: last.update(
            content=[{"type": "image_url", "image_url": {"url": "ftp://x"}}]
        ),
        "orphan_result": lambda: messages.append(
            {"role": "tool", "tool_call_id": "call_nope", "content": "r"}
        ),
        "bad_arguments": lambda: messages.insert(
            len(messages) - 1,
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}
                ],
            },
        ),
        "unanswered_call": lambda: (
            messages.append(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c9",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            )
            or messages.append({"role": "user", "content": "no result"})
        ),
        "tool_type": lambda: body.update(tools=[{"type": "retrieval"}]),
        "tool_name": lambda: body.update(
            tools=[{"type": "function", "function": {"parameters": {}}}]
        ),
        "tool_schema": lambda: body.update(
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        ),
        "no_messages": lambda: body.update(messages=[]),
    }
    breakages[how]()
    return body


BREAKAGES = [
    "role",
    "content_type",
    "empty_content",
    "empty_parts",
    "part_type",
    "image_url",
    "orphan_result",
    "bad_arguments",
    "unanswered_call",
    "tool_type",
    "tool_name",
    "tool_schema",
    "no_messages",
]


class _Http:
    def __init__(self, base: str) -> None:
        self.base = base

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())


@pytest.fixture
def http(gateway_factory, fake_upstream):
    gateway = gateway_factory(
        anthropic_api_key="sk-gateway", anthropic_base_url=fake_upstream.url, upstream_retries=0
    )
    return _Http(gateway.url)


SHAPES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SHAPES
@given(body=valid_request())
def test_valid_shapes_get_200_from_the_strict_fake(http, body):
    status, answer = http.post("/v1/chat/completions", body, {"cache-control": "no-store"})
    assert status == 200, answer


@SHAPES
@given(body=valid_request(), how=st.sampled_from(BREAKAGES))
def test_invalid_shapes_get_a_4xx_never_a_5xx(http, body, how):
    status, answer = http.post("/v1/chat/completions", _break(body, how))
    assert 400 <= status < 500, (how, answer)
    assert set(answer["error"]) == {"message", "type", "param", "code"}
