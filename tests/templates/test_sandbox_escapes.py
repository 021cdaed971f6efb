"""Known Jinja2 sandbox-escape payloads: every one is refused with 400, none executes.

Each payload, if it ran, would create a marker file (through os.popen/system, the
`__import__` builtin, or `open`). The test saves each one over HTTP: it must be refused
at save (static refusal), or, when it hides its intent from the static check (the
dangerous name arrives as a variable), refused at render. The marker must never exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest


def _payloads(marker: str) -> list[tuple[str, dict[str, Any]]]:
    touch = f"touch {marker}"
    return [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", {}),
        (f"{{{{ cycler.__init__.__globals__.os.popen('{touch}').read() }}}}", {}),
        (f"{{{{ lipsum.__globals__['os'].system('{touch}') }}}}", {}),
        (f"{{{{ joiner.__init__.__globals__.os.system('{touch}') }}}}", {}),
        (f"{{{{ namespace.__init__.__globals__.os.system('{touch}') }}}}", {}),
        (
            f"{{{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system("
            f"'{touch}') }}}}",
            {},
        ),
        (
            f"{{{{ request.application.__globals__.__builtins__.__import__('os')"
            f".popen('{touch}').read() }}}}",
            {},
        ),
        (f"{{{{ config.__class__.__init__.__globals__['os'].popen('{touch}') }}}}", {}),
        (
            "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == "
            f"'catch_warnings' %}}{{{{ c()._module.__builtins__['__import__']('os')"
            f".system('{touch}') }}}}{{% endif %}}{{% endfor %}}",
            {},
        ),
        ("{{ ''|attr('__class__')|attr('__mro__') }}", {}),
        (f"{{{{ range.__globals__['__builtins__']['open']('{marker}', 'w') }}}}", {}),
        ("{{ dict.__base__.__subclasses__() }}", {}),
        ("{{ ''['__cla' ~ 'ss__'] }}", {}),
        # Hidden from the static check: the dangerous names arrive as variables.
        ("{{ x[y] }}", {"x": "", "y": "__class__"}),
        ("{{ x|map(attribute=y)|list }}", {"x": ["a"], "y": "__class__"}),
        ("{{ y.format(x) }}", {"x": "s", "y": "{0.__class__.__mro__}"}),
        ("{{ x.update(y) }}{{ x }}", {"x": {}, "y": {"a": 1}}),
        ("{{ x[y][z] }}", {"x": {}, "y": "__class__", "z": "__init__"}),
    ]


@pytest.fixture
def gateway(gateway_factory, tmp_path):
    return gateway_factory(database_url=f"sqlite:///{tmp_path}/t.db")


async def test_escape_payloads_are_refused_and_never_run(gateway, tmp_path: Path):
    marker = tmp_path / "escaped"
    payloads = _payloads(str(marker))
    assert len(payloads) >= 10
    refused_at = {"save": 0, "render": 0}
    async with aiohttp.ClientSession() as session:
        for index, (body, values) in enumerate(payloads):
            name = f"escape{index}"
            template = {"body": body, "variables": [{"name": n} for n in sorted(values)]}
            saved = await session.put(f"{gateway.url}/api/templates/{name}", json=template)
            if saved.status != 201:
                payload = await saved.json()
                assert saved.status == 400, (body, payload)
                assert payload["type"] == "error"
                assert payload["error"]["type"] == "invalid_request_error"
                refused_at["save"] += 1
                continue
            rendered = await session.post(
                f"{gateway.url}/api/templates/{name}/render", json={"variables": values}
            )
            payload = await rendered.json()
            assert rendered.status == 400, (body, payload)
            assert "refused" in payload["error"]["message"] or "not" in payload["error"]["message"]
            generated = await session.post(
                f"{gateway.url}/api/generate", json={"template": name, "variables": values}
            )
            assert generated.status == 400, body
            refused_at["render"] += 1
    assert not marker.exists()
    assert refused_at["save"] >= 10 and refused_at["render"] >= 4, refused_at
