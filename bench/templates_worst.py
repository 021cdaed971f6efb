"""Worst-case template renders at the default bounds, and a typical render's cost.

    .venv/bin/python bench/templates_worst.py

Each hostile body must end in a 400 (InvalidRequest); the table says how long it ran
before the bound stopped it. Numbers vary with machine load: run it twice.
"""

from __future__ import annotations

import asyncio
import time

from promptrelay.errors import InvalidRequest
from promptrelay.templates.model import Template, TemplateDraft
from promptrelay.templates.render import Renderer

HOSTILE = {
    "nested range(100000) loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
    ),
    "exponential macro recursion": (
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}x"
    ),
    "100 map/join chains over range(100000)": (
        "{% for i in range(100) %}{{ range(100000)|map('string')|join(',')|length }}{% endfor %}"
    ),
    "loop with a fat body": "{% for i in range(100000) %}{% if i > 1 and i > 2 and i > 3"
    " and i > 4 and i > 5 and i > 6 and i > 7 and i > 8 %}{% endif %}{% endfor %}x",
    "string doubled 40 times": "{% set s = 'aaaaaaaaaaaaaaaa' %}"
    + "{% set s = s ~ s %}" * 40
    + "{{ s|length }}",
    "1 MB center() in a loop": (
        "{% for i in range(100000) %}{% set y = 'a'|center(1000000) %}{% endfor %}x"
    ),
    "set-block capturing a loop": "{% set x %}{% for i in range(100000) %}"
    + "y" * 1000
    + "{% endfor %}{% endset %}{{ x|length }}",
}

TYPICAL: dict[str, object] = {
    "body": "Summarise {{ text }} in {{ words }} words.{% for k in keys %} {{ k }}{% endfor %}",
    "system": "Be {{ tone }}",
    "variables": [
        "text",
        {"name": "words", "default": 50},
        {"name": "tone", "default": "brief"},
        {"name": "keys", "default": ["a", "b", "c"]},
    ],
}


def _template(data: dict[str, object], version: int) -> Template:
    return Template(TemplateDraft.from_json("t", data), version, 0.0)


def hostile(renderer: Renderer) -> None:
    print("| hostile body | ran for | ended with |")
    print("|---|---|---|")
    for version, (name, body) in enumerate(HOSTILE.items(), start=1):
        template = _template({"body": body}, version)
        renderer.check(template.draft)
        started = time.perf_counter()
        try:
            renderer.render(template, {})
            outcome = "rendered (!)"
        except InvalidRequest as error:
            outcome = "400: " + error.message.split("refused: ")[-1][:48]
        print(f"| {name} | {(time.perf_counter() - started) * 1000:.0f} ms | {outcome} |")


def typical(renderer: Renderer) -> None:
    template = _template(TYPICAL, 1000)
    values = {"text": "x" * 2000}
    renderer.render(template, values)
    n = 5000
    started = time.perf_counter()
    for _ in range(n):
        renderer.render(template, values)
    on_loop = (time.perf_counter() - started) / n * 1e6

    async def threaded() -> float:
        started = time.perf_counter()
        for _ in range(n):
            await asyncio.to_thread(renderer.render, template, values)
        return (time.perf_counter() - started) / n * 1e6

    print(f"\ntypical template (4 variables, 2 KB text): {on_loop:.0f} us per render,")
    print(f"{asyncio.run(threaded()):.0f} us through asyncio.to_thread")


if __name__ == "__main__":
    renderer = Renderer()
    hostile(renderer)
    typical(renderer)
