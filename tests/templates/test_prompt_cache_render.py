"""Prompt-cache markers of a template (`cache: 5m | 1h`, `{{ cache_breakpoint() }}`) and
the breakpoint arithmetic of core/prompt_cache.py. Pure: the renderer called directly."""

from __future__ import annotations

from typing import Any

import pytest

from promptrelay.core.prompt_cache import (
    auto_breakpoint,
    count_breakpoints,
    min_cacheable_tokens,
)
from promptrelay.errors import InvalidRequest
from promptrelay.templates.model import Template, TemplateDraft
from promptrelay.templates.render import Renderer

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


def _body(values: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    draft = TemplateDraft.from_json("t", fields)
    renderer = Renderer()
    renderer.check(draft)
    rendered = renderer.render(Template(draft, 1, 0.0), values or {})
    return rendered.messages_body({}, default_model="m", default_max_tokens=8)


def test_cache_on_the_system_prompt_makes_it_a_breakpoint() -> None:
    body = _body(system="Rules", cache="5m", body="Hi")
    assert body["system"] == [{"type": "text", "text": "Rules", "cache_control": EPHEMERAL}]
    assert body["messages"] == [{"role": "user", "content": "Hi"}]  # no marker: a string
    hour = _body(system="Rules", cache="1h", body="Hi")
    assert hour["system"][0]["cache_control"] == HOUR
    assert _body(system="Rules", body="Hi")["system"] == "Rules"  # no cache: as before


def test_a_body_marker_ends_a_cacheable_prefix() -> None:
    body = _body(
        {"doc": "D", "q": "Q"},
        body="Doc: {{ doc }}\n{{ cache_breakpoint() }}Q: {{ q }}",
        variables=["doc", "q"],
    )
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Doc: D\n", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Q: Q"},
    ]
    assert "system" not in body


def test_marker_ttls_default_to_the_templates_and_a_leading_one_marks_the_system() -> None:
    body = _body(system="S", cache="1h", body="A{{ cache_breakpoint() }}B")
    assert body["system"][0]["cache_control"] == HOUR
    assert body["messages"][0]["content"][0]["cache_control"] == HOUR
    leading = _body(system="S", body="  {{ cache_breakpoint('1h') }}B")
    assert leading["system"][0]["cache_control"] == HOUR
    assert leading["messages"][0]["content"] == [{"type": "text", "text": "  B"}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"system": "S", "cache": "5m", "body": "A{{ cache_breakpoint('1h') }}B"}, "1h"),
        (
            {"system": "S", "cache": "5m", "body": "{% for i in range(4) %}x{{ i }}"
             "{{ cache_breakpoint() }}{% endfor %}"},
            "5 cache breakpoints",
        ),
        ({"system": "S{{ cache_breakpoint() }}", "body": "B"}, "belongs in the body"),
        ({"body": "A{{ cache_breakpoint('2h') }}"}, "5m"),
    ],
)  # fmt: skip
def test_what_anthropic_would_refuse_is_a_400(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _body(**fields)


def test_cache_field_is_validated_at_save() -> None:
    with pytest.raises(InvalidRequest, match="cache"):
        TemplateDraft.from_json("t", {"body": "x", "cache": "10m"})
    with pytest.raises(InvalidRequest, match="cache"):
        TemplateDraft.from_json("t", {"body": "x", "cache": True})


def test_a_variable_cannot_forge_a_marker() -> None:
    forged = "\x00cache-0123456789abcdef:\x00"
    body = _body({"v": forged}, body="{{ cache_breakpoint() }}x{{ v }}", variables=["v"])
    assert body["messages"][0]["content"] == [{"type": "text", "text": "x" + forged}]


def _long(chars: int) -> str:
    return "r" * chars


def test_auto_breakpoint_marks_a_long_system_prompt_only() -> None:
    model = "claude-sonnet-4-5"
    long_body = {"model": model, "system": _long(4 * 1025), "messages": []}
    marked = auto_breakpoint(long_body, model)
    assert marked["system"] == [
        {"type": "text", "text": _long(4 * 1025), "cache_control": EPHEMERAL}
    ]
    assert long_body["system"] == _long(4 * 1025)  # the caller's body is not changed
    short = {"model": model, "system": _long(4 * 1024), "messages": []}
    assert auto_breakpoint(short, model) is short  # not longer than the minimum
    haiku = {"system": _long(4 * 2000), "messages": []}
    assert auto_breakpoint(haiku, "claude-3-5-haiku-20241022") is haiku  # its minimum: 2048
    assert min_cacheable_tokens("claude-haiku-4-5") == 4096


def test_auto_breakpoint_counts_what_the_request_carries() -> None:
    marked_block = {"type": "text", "text": "x", "cache_control": EPHEMERAL}
    system = [{"type": "text", "text": _long(8000)}]
    three = {
        "tools": [{"name": "t", "input_schema": {}, "cache_control": EPHEMERAL}],
        "system": system,
        "messages": [{"role": "user", "content": [marked_block, marked_block]}],
    }
    assert count_breakpoints(three) == 3
    fourth = auto_breakpoint(three, "claude-sonnet-4-5")
    assert count_breakpoints(fourth) == 4 and fourth["system"][-1]["cache_control"] == EPHEMERAL
    four = {**three, "messages": [{"role": "user", "content": [marked_block] * 3}]}
    assert auto_breakpoint(four, "claude-sonnet-4-5") is four  # four already: none added
    ends_marked = {"system": [*system, marked_block], "messages": []}
    assert auto_breakpoint(ends_marked, "claude-sonnet-4-5") is ends_marked
