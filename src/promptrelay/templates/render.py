"""Check templates at save time and render them in the bounded sandbox.

    renderer = Renderer(Limits(max_steps=200_000, max_bytes=1 << 20))
    renderer.check(draft)                        # InvalidRequest: syntax, internals, variables
    rendered = renderer.render(template, {"who": "Ada"})
    rendered.prompt, rendered.system

Everything a caller can get wrong is an `InvalidRequest` (400) that says where:
- at save: a syntax error (field, line and Jinja's message); a reach for internals
  (`_`-prefixed attributes or keys, strings holding `__`), `include`/`import`/`extends`,
  recursive loops, unknown filters; a variable used but not declared;
- at render: a missing required variable or an undeclared one (named); anything the
  sandbox refuses (internals reached dynamically, work or size over the bounds); any
  error raised while rendering (with the template line when known).

Compiled templates are kept per (name, version): stored versions never change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError

from promptrelay.errors import InvalidRequest
from promptrelay.templates.model import Template, TemplateDraft
from promptrelay.templates.sandbox import BoundedSandbox, Limits, RenderLimit, budget_scope

__all__ = ["Rendered", "Renderer"]

_COMPILED_MAX = 512
_FORBIDDEN_TAGS = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered template and the defaults it carries for the Messages call."""

    name: str
    version: int
    prompt: str
    system: str | None
    model: str | None
    params: Mapping[str, Any] = field(default_factory=dict)

    def messages_body(
        self, explicit: Mapping[str, Any], *, default_model: str, default_max_tokens: int
    ) -> dict[str, Any]:
        """The Messages API body: the caller's explicit fields, else the template's
        defaults, else the gateway's; the rendered text is the one user message."""
        body: dict[str, Any] = dict(self.params)
        body["model"] = self.model or default_model
        body.setdefault("max_tokens", default_max_tokens)
        if self.system:
            body["system"] = self.system
        body.update((name, value) for name, value in explicit.items() if name != "messages")
        body["messages"] = [{"role": "user", "content": self.prompt}]
        return body


class Renderer:
    def __init__(self, limits: Limits | None = None, *, compiled_max: int = _COMPILED_MAX) -> None:
        self.limits = limits or Limits()
        self._env = BoundedSandbox()
        # (name, version, body, system): versions never change, the texts make it certain
        self._compiled: OrderedDict[tuple[str, int, str, str | None], dict[str, JinjaTemplate]]
        self._compiled = OrderedDict()
        self._compiled_max = compiled_max
        # Renders run on `asyncio.to_thread` workers: without the lock, one thread's
        # eviction can fall between another's lookup and its move_to_end (KeyError).
        self._compiled_lock = threading.Lock()

    # -- save time -------------------------------------------------------------------------

    def check(self, draft: TemplateDraft) -> None:
        """Refuse a draft that could not render safely; never runs the template."""
        declared = {variable.name for variable in draft.variables}
        for name, source in _sources(draft):
            tree = self._parse(name, source)
            _refuse_internals(name, tree)
            used = self._used_variables(name, tree)
            missing = sorted(used - declared)
            if missing:
                raise InvalidRequest(
                    f"{name}: variable {missing[0]!r} is used but not declared in variables"
                )
            self._compile(name, tree)

    # -- render time -----------------------------------------------------------------------

    def render(self, template: Template, variables: Mapping[str, Any]) -> Rendered:
        values = _bind(template, variables)
        compiled = self._compiled_for(template)
        outputs: dict[str, str] = {}
        with budget_scope(self.limits):
            for name, jinja in compiled.items():
                outputs[name] = self._run(template, name, jinja, values)
        prompt = outputs["body"]
        if not prompt.strip():
            raise InvalidRequest(f"template {template.name!r}: the rendered body is empty")
        draft = template.draft
        return Rendered(
            name=template.name,
            version=template.version,
            prompt=prompt,
            system=outputs.get("system") or None,
            model=draft.model,
            params=dict(draft.params),
        )

    def _compiled_for(self, template: Template) -> dict[str, JinjaTemplate]:
        draft = template.draft
        key = (template.name, template.version, draft.body, draft.system)
        with self._compiled_lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
        # Compiling takes milliseconds: outside the lock, so hits never wait for it. Two
        # threads missing the same key both compile it; the results are equal.
        compiled = {}
        for name, source in _sources(draft):
            tree = self._parse(name, source)
            _refuse_internals(name, tree)
            compiled[name] = self._compile(name, tree)
        with self._compiled_lock:
            self._compiled[key] = compiled
            self._compiled.move_to_end(key)
            while len(self._compiled) > self._compiled_max:
                self._compiled.popitem(last=False)
        return compiled

    def _run(
        self, template: Template, name: str, jinja: JinjaTemplate, values: dict[str, Any]
    ) -> str:
        where = f"template {template.name!r} v{template.version} {name}"
        chunks: list[str] = []
        size = 0
        try:
            for chunk in _generate(jinja, values):
                size += len(chunk.encode("utf-8", "surrogatepass"))
                if size > self.limits.max_bytes:
                    raise RenderLimit(f"output exceeds {self.limits.max_bytes} bytes")
                chunks.append(chunk)
        except SecurityError as error:
            raise InvalidRequest(f"{where}: refused: {_message(error)}") from None
        except RecursionError:
            raise InvalidRequest(f"{where}: refused: nested too deeply") from None
        except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as error:
            line = _template_line(error.__traceback__, f"<{name}>")
            at = f" at line {line}" if line else ""
            raise InvalidRequest(f"{where}: render error{at}: {_message(error)}") from None
        except MemoryError:
            raise InvalidRequest(f"{where}: refused: out of memory while rendering") from None
        return "".join(chunks)

    # -- compiling -------------------------------------------------------------------------

    def _parse(self, name: str, source: str) -> nodes.Template:
        try:
            return self._env.parse(source, name=name, filename=f"<{name}>")
        except TemplateSyntaxError as error:
            raise InvalidRequest(
                f"{name}: syntax error at line {error.lineno}: {error.message}"
            ) from None
        except RecursionError:
            raise InvalidRequest(f"{name}: nested too deeply") from None

    def _used_variables(self, name: str, tree: nodes.Template) -> set[str]:
        try:
            used = meta.find_undeclared_variables(tree)
        except TemplateSyntaxError as error:  # an unknown filter or test
            raise InvalidRequest(f"{name}: error at line {error.lineno}: {error.message}") from None
        return used - set(self._env.globals)

    def _compile(self, name: str, tree: nodes.Template) -> JinjaTemplate:
        try:
            self._env.rewrite(tree)
            code = self._env.compile(tree, name=name, filename=f"<{name}>")
        except TemplateSyntaxError as error:  # includes unknown filters and tests
            raise InvalidRequest(f"{name}: error at line {error.lineno}: {error.message}") from None
        except SecurityError as error:
            raise InvalidRequest(f"{name}: refused: {_message(error)}") from None
        except RecursionError:
            raise InvalidRequest(f"{name}: nested too deeply") from None
        return self._env.template_class.from_code(self._env, code, self._env.make_globals(None))


def _sources(draft: TemplateDraft) -> list[tuple[str, str]]:
    sources = [("body", draft.body)]
    if draft.system:
        sources.append(("system", draft.system))
    return sources


def _refuse_internals(name: str, tree: nodes.Template) -> None:
    """Static refusal of what only an escape attempt needs (the sandbox also refuses it)."""
    for node in tree.find_all(nodes.Node):
        line = f"{name}: line {node.lineno}"
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise InvalidRequest(f"{line}: attribute {node.attr!r} is not accessible")
        if isinstance(node, nodes.Const) and isinstance(node.value, str):
            if "__" in node.value:
                raise InvalidRequest(f"{line}: strings containing '__' are not allowed")
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            if isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
                raise InvalidRequest(f"{line}: key {node.arg.value!r} is not accessible")
        if isinstance(node, _FORBIDDEN_TAGS):
            raise InvalidRequest(f"{line}: include, import and extends are not available")
        if isinstance(node, nodes.Name) and node.name.startswith("_"):
            raise InvalidRequest(f"{line}: names starting with '_' are not allowed")


def _bind(template: Template, variables: Mapping[str, Any]) -> dict[str, Any]:
    declared = {variable.name: variable for variable in template.draft.variables}
    unknown = sorted(set(variables) - set(declared))
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise InvalidRequest(
            f"variables.{unknown[0]}: not declared by template {template.name!r}"
            f" (declared: {names})"
        )
    values: dict[str, Any] = {}
    for name, variable in declared.items():
        if name in variables and variables[name] is not None:
            values[name] = variables[name]
        elif variable.required:
            raise InvalidRequest(
                f"variables.{name}: required by template {template.name!r} v{template.version}"
            )
        elif variable.default is not None:
            values[name] = variable.default
    return values


def _generate(jinja: JinjaTemplate, values: dict[str, Any]) -> Iterator[str]:
    return jinja.generate(values)


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _message(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
