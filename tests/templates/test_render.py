"""Rendering in the bounded sandbox: errors at save, errors at render, bounds on work and size.

Pure: no sockets, no database. The renderer is called directly.
"""

from __future__ import annotations

from typing import Any

import pytest

from promptrelay.errors import InvalidRequest
from promptrelay.templates.model import Template, TemplateDraft
from promptrelay.templates.render import Renderer
from promptrelay.templates.sandbox import Limits


def _template(body: str, variables: list[Any] | None = None, **fields: Any) -> Template:
    draft = TemplateDraft.from_json("t", {"body": body, "variables": variables or [], **fields})
    return Template(draft=draft, version=1, created_at=0.0)


def _render(body: str, variables: list[Any] | None = None, renderer: Renderer | None = None,
            **values: Any) -> str:  # fmt: skip
    renderer = renderer or Renderer()
    template = _template(body, variables)
    renderer.check(template.draft)
    return renderer.render(template, values).prompt


def test_renders_declared_variables_defaults_and_system():
    renderer = Renderer()
    template = _template(
        "Summarise {{ text }} in {{ words }} words.{% if tone %} Tone: {{ tone }}{% endif %}",
        [{"name": "text"}, {"name": "words", "default": 20}, {"name": "tone", "required": False}],
        system="You write for {{ audience|default('everyone') }}",
    )
    with pytest.raises(InvalidRequest, match="audience"):  # used in system, not declared
        renderer.check(template.draft)
    template = _template(
        "Summarise {{ text }} in {{ words }} words.{% if tone %} Tone: {{ tone }}{% endif %}",
        [{"name": "text"}, {"name": "words", "default": 20}, {"name": "tone", "required": False}],
        system="Be {{ tone or 'plain' }}",
    )
    renderer.check(template.draft)
    rendered = renderer.render(template, {"text": "the report"})
    assert rendered.prompt == "Summarise the report in 20 words."
    assert rendered.system == "Be plain"
    rendered = renderer.render(template, {"text": "x", "words": 5, "tone": "dry"})
    assert rendered.prompt == "Summarise x in 5 words. Tone: dry"


def test_missing_required_variable_is_named():
    template = _template("Hi {{ who }} from {{ town }}", ["who", "town"])
    with pytest.raises(InvalidRequest) as caught:
        Renderer().render(template, {"who": "Ada"})
    assert caught.value.status == 400
    assert "variables.town" in caught.value.message and "required" in caught.value.message


def test_undeclared_variable_passed_at_render_is_named():
    template = _template("Hi {{ who }}", ["who"])
    with pytest.raises(InvalidRequest, match=r"variables\.whom: not declared"):
        Renderer().render(template, {"who": "Ada", "whom": "x"})


def test_syntax_error_at_save_names_line_and_message():
    body = "line one\n{% if x %}ok{% endif %}\n{{ x + }}"
    draft = TemplateDraft.from_json("t", {"body": body, "variables": ["x"]})
    with pytest.raises(InvalidRequest) as caught:
        Renderer().check(draft)
    message = caught.value.message
    assert message.startswith("body: syntax error at line 3:")
    assert "unexpected" in message


def test_variable_used_but_not_declared_is_refused_at_save():
    draft = TemplateDraft.from_json("t", {"body": "{{ a }} {{ b }}", "variables": ["a"]})
    with pytest.raises(InvalidRequest, match="variable 'b' is used but not declared"):
        Renderer().check(draft)


def test_loop_locals_and_set_are_not_variables():
    out = _render(
        "{% set sep = ', ' %}{% for item in items %}{{ loop.index }}={{ item }}"
        "{% if not loop.last %}{{ sep }}{% endif %}{% endfor %}",
        ["items"],
        items=["a", "b"],
    )
    assert out == "1=a, 2=b"


@pytest.mark.parametrize(
    "body",
    [
        "{% for i in range(10**9) %}{% for j in range(10**9) %}{% endfor %}{% endfor %}x",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}x",
        "{{ range(100000)|map('string')|join(',')|length }}"
        "{% for i in range(100) %}{{ range(100000)|list|length }}{% endfor %}",
        "{% for i in range(100000) %}{% set y = 'a'|center(1000000) %}{% endfor %}x",
        "{% set x %}{% for i in range(100000) %}" + "y" * 1000 + "{% endfor %}{% endset %}x",
    ],
)
def test_work_is_bounded_without_clocks(body):
    renderer = Renderer(Limits(max_steps=50_000))
    with pytest.raises(
        InvalidRequest, match=r"refused: (template needs more than 50000 steps|argument)"
    ):
        _render(body, renderer=renderer)


@pytest.mark.parametrize(
    "body",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ 'a'|center(1000000000) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ 'ab'|replace('a', 'a' * 1000) * 1000 }}",
        "{% set s = 'aaaaaaaaaaaaaaaa' %}" + "{% set s = s ~ s %}" * 40 + "{{ s|length }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
        "{{ 7 ** 100000 }}",
        "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
    ],
)
def test_sizes_are_bounded(body):
    renderer = Renderer(Limits(max_steps=10_000_000, max_bytes=100_000))
    with pytest.raises(InvalidRequest, match="refused"):
        _render(body, renderer=renderer)


def test_ordinary_large_inputs_fit_the_default_budget():
    rows = [{"name": f"item {i}", "price": i * 1.5, "tags": ["a", "b"]} for i in range(2000)]
    out = _render(
        "{% for row in rows %}{{ loop.index }}. {{ row.name|title }}: "
        "{{ '%.2f'|format(row.price) }} [{{ row.tags|join(', ') }}]"
        "{% if not loop.last %}\n{% endif %}{% endfor %}",
        ["rows"],
        rows=rows,
    )
    assert out.count("\n") == 1999 and out.endswith("2000. Item 1999: 2998.50 [a, b]")


def test_output_bound_is_in_bytes():
    renderer = Renderer(Limits(max_bytes=1000))
    assert len(_render("{{ 'é' * 499 }}", renderer=renderer).encode()) == 998
    with pytest.raises(InvalidRequest, match="output exceeds 1000 bytes"):
        _render("{% for i in range(3) %}{{ 'é' * 400 }}{% endfor %}", renderer=renderer)


def test_runtime_errors_are_400_with_the_line():
    with pytest.raises(InvalidRequest, match="render error at line 2: division by zero"):
        _render("ok\n{{ 1 / n }}", ["n"], n=0)
    with pytest.raises(InvalidRequest, match="has no attribute 'missing'"):
        _render("{{ d.missing.deeper }}", ["d"], d={})


def test_unknown_filters_include_and_recursive_loops_are_refused_at_save():
    renderer = Renderer()
    for body, expected in [
        ("{{ x|attr('upper') }}", "No filter named 'attr'"),
        ("{{ x|random }}", "No filter named 'random'"),
        ("{% include 'other' %}", "include, import and extends"),
        ("{% extends 'base' %}", "include, import and extends"),
        ("{% for a in x recursive %}{{ loop(a) }}{% endfor %}", "recursive loops"),
    ]:
        draft = TemplateDraft.from_json("t", {"body": body, "variables": ["x"]})
        with pytest.raises(InvalidRequest, match=expected):
            renderer.check(draft)


def test_compiled_templates_are_reused_per_version():
    renderer = Renderer()
    template = _template("Hi {{ who }}", ["who"])
    assert renderer.render(template, {"who": "a"}).prompt == "Hi a"
    assert len(renderer._compiled) == 1
    compiled = next(iter(renderer._compiled.values()))
    assert renderer.render(template, {"who": "b"}).prompt == "Hi b"
    assert next(iter(renderer._compiled.values())) is compiled
