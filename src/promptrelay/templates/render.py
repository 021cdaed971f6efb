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

Prompt caching: `cache: 5m | 1h` on a template makes its system prompt a breakpoint
(`cache_control`); `{{ cache_breakpoint() }}` in the body ends a cacheable prefix there
(the body becomes text blocks, each marked one ending in a breakpoint; the TTL is the
marker's argument, else the template's `cache`, else 5 minutes). A marker before any
text marks the system prompt. More than four breakpoints, or a 1 h one after a 5 min
one (Anthropic refuses both), is a 400 at render.

Compiled templates are kept per (name, version): stored versions never change.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError

from promptrelay.core.prompt_cache import MAX_BREAKPOINTS, cache_control
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
    cache: str | None = None  # the system prompt's breakpoint TTL, when it is one
    blocks: tuple[tuple[str, str | None], ...] = ()  # the body cut at its markers: (text, TTL)

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
            if self.cache is not None:
                body["system"] = [_text_block(self.system, self.cache)]
        body.update((name, value) for name, value in explicit.items() if name != "messages")
        content: Any = self.prompt
        if self.blocks:
            content = [_text_block(text, ttl) for text, ttl in self.blocks]
        body["messages"] = [{"role": "user", "content": content}]
        return body


def _text_block(text: str, ttl: str | None) -> dict[str, Any]:
    if ttl is None:
        return {"type": "text", "text": text}
    return {"type": "text", "text": text, "cache_control": cache_control(ttl)}


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
        with budget_scope(self.limits) as budget:
            for name, jinja in compiled.items():
                outputs[name] = self._run(template, name, jinja, values)
        draft = template.draft
        where = f"template {template.name!r} v{template.version}"
        system = outputs.get("system") or None
        if system is not None and budget.marker in system:
            raise InvalidRequest(f"{where} system: cache_breakpoint() belongs in the body")
        prompt, blocks, leading = _cut(outputs["body"], budget.marker, draft.cache)
        if not prompt.strip():
            raise InvalidRequest(f"template {template.name!r}: the rendered body is empty")
        system_ttl = (draft.cache or leading) if system is not None else None
        _check_breakpoints(where, system_ttl, blocks)
        return Rendered(
            name=template.name,
            version=template.version,
            prompt=prompt,
            system=system,
            model=draft.model,
            params=dict(draft.params),
            cache=system_ttl,
            blocks=blocks,
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


def _cut(
    text: str, marker: str, default_ttl: str | None
) -> tuple[str, tuple[tuple[str, str | None], ...], str | None]:
    """(the text without markers, its blocks, the TTL of a marker before any text).

    No marker: no blocks (the body stays one string, as before). Whitespace between
    markers joins the block before it (Anthropic refuses blank text blocks)."""
    parts = re.split(re.escape(marker) + "(5m|1h|)\x00", text)
    if len(parts) == 1:
        return text, (), None
    segments, ttls = parts[0::2], parts[1::2]
    blocks: list[list[Any]] = []
    pending, leading = "", None
    for index, segment in enumerate(segments):
        if segment.strip():
            blocks.append([pending + segment, None])
            pending = ""
        elif blocks:
            blocks[-1][0] += segment
        else:
            pending += segment
        if index < len(ttls):
            ttl = ttls[index] or default_ttl or "5m"
            if blocks:
                blocks[-1][1] = ttl
            else:
                leading = ttl
    return "".join(segments), tuple((b[0], b[1]) for b in blocks), leading


def _check_breakpoints(
    where: str, system_ttl: str | None, blocks: tuple[tuple[str, str | None], ...]
) -> None:
    ttls = [ttl for ttl in (system_ttl, *(ttl for _, ttl in blocks)) if ttl is not None]
    if len(ttls) > MAX_BREAKPOINTS:
        raise InvalidRequest(
            f"{where}: {len(ttls)} cache breakpoints; Anthropic allows {MAX_BREAKPOINTS}"
        )
    if "5m" in ttls and "1h" in ttls[ttls.index("5m") :]:
        raise InvalidRequest(f"{where}: a 1h cache breakpoint cannot follow a 5m one")


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
