"""The compiled-template cache is shared by the worker threads `asyncio.to_thread` runs
renders on: concurrent renders over more templates than it keeps (so it evicts all the
time) must never fail, and the cache must stay within its bound.

Pure: no sockets, no database. Thread switches are made very frequent for these tests.
With a cache of 4 over 6 templates an unlocked lookup-then-move_to_end meets another
thread's eviction within a few thousand renders (measured: every run of 12 before the
lock); at the real size of 512 the same race is rare, so that test checks the bound and
the outputs under the same load.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator

import pytest

from promptrelay.templates import render
from promptrelay.templates.model import Template, TemplateDraft
from promptrelay.templates.render import Renderer

_THREADS = 8


@pytest.fixture
def frequent_switches() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _templates(count: int) -> list[Template]:
    templates = []
    for index in range(count):
        draft = TemplateDraft.from_json(
            f"t{index}", {"body": f"#{index} {{{{ who }}}}", "variables": ["who"]}
        )
        templates.append(Template(draft=draft, version=1, created_at=0.0))
    return templates


def _hammer(renderer: Renderer, templates: list[Template], renders: int) -> None:
    """Render random picks from `templates` on _THREADS threads; fail on any error."""
    errors: list[BaseException] = []
    wrong: list[str] = []
    start = threading.Barrier(_THREADS)
    stop = threading.Event()

    def work(seed: int) -> None:
        pick = random.Random(seed)
        start.wait()
        for _ in range(renders):
            if stop.is_set():
                return
            template = pick.choice(templates)
            try:
                prompt = renderer.render(template, {"who": seed}).prompt
            except BaseException as error:  # anything at all is the bug
                errors.append(error)
                stop.set()
                return
            if prompt != f"#{template.name[1:]} {seed}":
                wrong.append(prompt)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"
    assert not wrong, wrong[:3]


def test_concurrent_renders_with_constant_eviction_never_fail(frequent_switches):
    renderer = Renderer(compiled_max=4)
    _hammer(renderer, _templates(6), renders=2000)
    assert len(renderer._compiled) <= 4


def test_concurrent_renders_over_more_templates_than_the_cache_keeps(frequent_switches):
    renderer = Renderer()
    templates = _templates(render._COMPILED_MAX + 100)
    _hammer(renderer, templates, renders=400)
    assert len(renderer._compiled) == render._COMPILED_MAX
