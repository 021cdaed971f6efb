"""A Jinja2 sandbox that is bounded in work and in the size of everything it makes.

Jinja2's `ImmutableSandboxedEnvironment` already refuses Python internals (attributes
starting with `_`, unsafe callables, mutation of lists and dicts). It does not bound
work: `range(10**5)` nested four deep, `'x' * 10**9`, `'%0999999999d' % 1`,
`'a'|center(10**9)` or a chain of `{% set s = s ~ s %}` all run (or allocate) without
limit. This module adds the bounds, without threads or clocks:

- a **step budget** per render (`Budget`, kept in a context variable so concurrent
  renders never share one): every loop iteration, call, filter and intercepted
  operator spends steps, and operations over a sized value spend its length;
- every `{% for %}` is rewritten at compile time to iterate through `_Hooks.iterate`,
  which spends one step per item, and every `~` concatenation through `_Hooks.concat`,
  which refuses results over the size bound; recursive loops are refused;
- `*`, `**`, `+` and `%` are intercepted: string/list results over the size bound,
  integers over `_MAX_INT_BITS` and `%` formats with huge widths are refused before
  anything is allocated;
- calls refuse integer arguments above the size bound (`center`, `ljust`, `zfill`,
  `indent`, `wordwrap`, ...), huge widths in `str.format`, and `replace` calls whose
  result would be too large; results are size-checked too;
- only a list of deterministic, side-effect-free filters exists (no `attr`, `random`,
  `pprint`, `urlize`, `xmlattr`); the globals are `range` (bounded), `dict`, a
  `namespace` whose attributes are size-checked and `cache_breakpoint(ttl?)`, which
  writes this render's marker (`Budget.marker`, a random nonce a variable cannot
  forge) where the cacheable prefix ends; `render.py` cuts the body there.

Every refusal raises `RenderLimit` (a `SecurityError`), which the renderer turns into a
400. The output stream itself is bounded by the renderer (`render.py`).
"""

from __future__ import annotations

import contextvars
import functools
import re
import secrets
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.filters import FILTERS
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

__all__ = ["BoundedSandbox", "Budget", "Limits", "RenderLimit", "budget_scope"]

_MAX_INT_BITS = 4096
_LAZY_ITEM_WEIGHT = 4
_CALL_WEIGHT = 40  # a macro call costs about as much Python as 40 loop-body nodes

SAFE_FILTERS = (
    "abs", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e",
    "escape", "filesizeformat", "first", "float", "format", "groupby", "indent", "int",
    "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject",
    "rejectattr", "replace", "reverse", "round", "select", "selectattr", "slice", "sort",
    "string", "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper",
    "urlencode", "wordcount", "wordwrap",
)  # fmt: skip

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


class RenderLimit(SecurityError):
    """A template tried to do more work, or make something bigger, than allowed."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_steps: int = 200_000
    max_bytes: int = 1 << 20  # rendered output, and any single string or list made


class Budget:
    """Steps left for one render."""

    __slots__ = ("limits", "marker", "steps")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.steps = 0
        # \x00 never comes out of a template's own text by accident; the nonce makes it
        # impossible for a variable's value to pass for a marker.
        self.marker = f"\x00cache-{secrets.token_hex(8)}:"

    def spend(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.limits.max_steps:
            raise RenderLimit(
                f"template needs more than {self.limits.max_steps} steps (loops, calls,"
                " filters); simplify it or pass smaller variables"
            )


_budget: contextvars.ContextVar[Budget] = contextvars.ContextVar("promptrelay_template_budget")


class budget_scope:  # lower case: used like a function, `with budget_scope(limits):`
    """Give the renders in this `with` block one fresh budget."""

    def __init__(self, limits: Limits) -> None:
        self.budget = Budget(limits)
        self._token: contextvars.Token[Budget] | None = None

    def __enter__(self) -> Budget:
        self._token = _budget.set(self.budget)
        return self.budget

    def __exit__(self, *_exc: object) -> None:
        assert self._token is not None
        _budget.reset(self._token)


def _current() -> Budget:
    try:
        return _budget.get()
    except LookupError:
        raise RenderLimit("template rendered outside a budget") from None


def _cache_breakpoint(ttl: str = "") -> str:
    """`{{ cache_breakpoint() }}` or `{{ cache_breakpoint("1h") }}` in a body."""
    if ttl not in ("", "5m", "1h"):
        raise ValueError('cache_breakpoint: the TTL is "5m" or "1h"')
    return f"{_current().marker}{ttl}\x00"


def _size(value: Any) -> int:
    """The work an operation over `value` costs: items of containers, strings by 64 chars."""
    if isinstance(value, str | bytes):
        return len(value) // 64
    if isinstance(value, list | tuple | dict | set | frozenset | range):
        return len(value)
    return 0


def _check_result(value: Any, limits: Limits) -> Any:
    if isinstance(value, str | bytes | list | tuple | dict) and len(value) > limits.max_bytes:
        raise RenderLimit(f"a value would exceed {limits.max_bytes} characters or items")
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise RenderLimit(f"a number would exceed {_MAX_INT_BITS} bits")
    return value


def _check_ints(args: Iterable[Any], limits: Limits) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > limits.max_bytes:
            raise RenderLimit(f"argument {arg} is larger than {limits.max_bytes}")


def _check_percent(fmt: str, limits: Limits) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for width in match.groups():
            if width == "*" or (width and int(width) > limits.max_bytes):
                raise RenderLimit("a % format width is too large or taken from arguments")


def _check_format(fmt: str, limits: Limits) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as error:
        raise RenderLimit(f"bad format string: {error}") from None
    for _literal, _field, spec, _conversion in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise RenderLimit("nested fields in a format spec are not allowed")
        for digits in re.findall(r"\d+", spec):
            if int(digits) > limits.max_bytes:
                raise RenderLimit("a format width is too large")


def _check_replace(value: Any, old: Any, new: Any, count: Any, limits: Limits) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        hits = value.count(old) if old else len(value) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        if len(value) + hits * len(new) > limits.max_bytes:
            raise RenderLimit(f"replace would exceed {limits.max_bytes} characters")


def _counted(items: Iterable[Any], budget: Budget, weight: int = 1) -> Iterator[Any]:
    for item in items:
        budget.spend(weight)
        yield item


def _guard_result(value: Any, budget: Budget) -> Any:
    """Size-check a result and pay for its size; a lazy one (map, select, ...) pays per
    item it yields. Paying for sizes bounds the memory a render can churn through, even
    for values that are made and dropped (`{% set x = 'a'|center(10**6) %}` in a loop)."""
    if isinstance(value, Iterator) and not isinstance(value, str | bytes):
        # map/select items each run a filter or test through our wrappers: ~4 loop steps
        return _counted(value, budget, _LAZY_ITEM_WEIGHT)
    _check_result(value, budget.limits)
    budget.spend(_size(value))
    return value


def _filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a built-in filter: pay for the input, check arguments, bound the result."""
    passes_first = getattr(func, "jinja_pass_arg", None) is not None

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _current()
        rest = args[1:] if passes_first else args
        value, options = (rest[0], rest[1:]) if rest else (None, ())
        budget.spend(1 + _size(value))
        _check_ints([*options, *kwargs.values()], budget.limits)
        if name == "replace" and len(options) >= 2:
            count = options[2] if len(options) > 2 else kwargs.get("count")
            _check_replace(value, options[0], options[1], count, budget.limits)
        if name == "format" and isinstance(value, str):
            _check_percent(value, budget.limits)
        return _guard_result(func(*args, **kwargs), budget)

    return bounded


def _bounded_range(*args: int) -> range:
    budget = _current()
    _check_ints(args, budget.limits)
    budget.spend()
    return range(*args)


class _BoundedNamespace(Namespace):
    """`namespace()` whose attributes are size-checked: loops cannot grow one forever."""

    def __setitem__(self, name: str, value: Any) -> None:
        budget = _current()
        budget.spend(1 + _size(value))
        super().__setitem__(name, _check_result(value, budget.limits))


class _Hooks(Extension):
    """Functions the compiled template calls through `ExtensionAttribute` nodes.

    Templates cannot name these themselves: there is no syntax for an extension
    attribute, so only our rewritten loops and concatenations reach them.
    """

    def iterate(self, iterable: Any, weight: int = 1) -> Iterator[Any]:
        """Iterate, spending `weight` (the loop body's size in AST nodes) per item."""
        budget = _current()
        if isinstance(iterable, Undefined):
            iterable = ()
        return _counted(iterable, budget, weight)

    def spend(self, weight: int) -> str:
        """Pay for running a macro or call-block body once; renders as nothing."""
        _current().spend(weight)
        return ""

    def concat(self, *parts: Any) -> str:
        budget = _current()
        total = 0
        texts = []
        for part in parts:
            text = str(part)
            total += len(text)
            if total > budget.limits.max_bytes:
                raise RenderLimit(f"a string would exceed {budget.limits.max_bytes} characters")
            texts.append(text)
        budget.spend(1 + total // 64)
        return "".join(texts)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The environment templates compile in. See the module docstring for the bounds."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,
            keep_trailing_newline=True,
            extensions=[_Hooks],
            cache_size=0,  # the renderer keeps compiled templates itself
        )
        self.globals.clear()
        self.globals.update(
            range=_bounded_range,
            dict=dict,
            namespace=_BoundedNamespace,
            cache_breakpoint=_cache_breakpoint,
        )
        self.filters = {name: _filter(name, FILTERS[name]) for name in SAFE_FILTERS}
        self._hooks = self.extensions[_Hooks.identifier]

    def rewrite(self, tree: nodes.Template) -> nodes.Template:
        """Route every loop and `~` through the budget (call before compiling)."""
        for loop in list(tree.find_all(nodes.For)):
            if loop.recursive:
                raise RenderLimit(f"line {loop.lineno}: recursive loops are not allowed")
            weight = nodes.Const(_weight([*loop.body, *loop.else_, loop.test]))
            iterable = cast(nodes.Expr, loop.iter)
            loop.iter = self._hook_call("iterate", [iterable, weight], loop.lineno)
        for found in list(tree.find_all((nodes.Macro, nodes.CallBlock))):
            body = cast(nodes.Macro | nodes.CallBlock, found)
            weight = nodes.Const(_CALL_WEIGHT + _weight(body.body))
            spend = self._hook_call("spend", [weight], body.lineno)
            body.body.insert(0, nodes.Output([spend], lineno=body.lineno))
        _swap_concats(
            tree, lambda concat: self._hook_call("concat", list(concat.nodes), concat.lineno)
        )
        return tree

    def _hook_call(self, name: str, args: list[nodes.Expr], lineno: int) -> nodes.Call:
        attribute = nodes.ExtensionAttribute(_Hooks.identifier, name, lineno=lineno)
        return nodes.Call(attribute, args, [], None, None, lineno=lineno)

    def call(
        __self,  # Jinja's signature: names that cannot clash with the caller's kwargs
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget = _current()
        limits = budget.limits
        budget.spend(1 + sum(_size(arg) for arg in args) + _size(getattr(__obj, "__self__", None)))
        if __obj is not _bounded_range:
            _check_ints([*args, *kwargs.values()], limits)
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            method = getattr(target, "__name__", "")
            if method in ("format", "format_map"):
                _check_format(owner, limits)
            elif method == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1, limits)
            elif method in ("join",) and args:
                budget.spend(_size(args[0]))
        result = super().call(__context, __obj, *args, **kwargs)
        return _guard_result(result, budget)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        """Jinja renders a refused attribute as an empty value; we refuse the template."""
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} object is not allowed"
        )

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _current()
        limits = budget.limits
        budget.spend(1 + _size(left) + _size(right))
        if operator == "*":
            _check_repeat(left, right, limits)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, limits)
        elif operator == "+" and _both_sized(left, right):
            if len(left) + len(right) > limits.max_bytes:
                raise RenderLimit(f"a value would exceed {limits.max_bytes} characters or items")
        return _guard_result(super().call_binop(context, operator, left, right), budget)


_SIZED = (str, bytes, list, tuple)


def _both_sized(left: Any, right: Any) -> bool:
    return isinstance(left, _SIZED) and isinstance(right, _SIZED)


def _check_repeat(left: Any, right: Any, limits: Limits) -> None:
    for seq, times in ((left, right), (right, left)):
        if not (isinstance(seq, _SIZED) and isinstance(times, int)):
            continue
        if len(seq) * times > limits.max_bytes:
            raise RenderLimit(f"a value would exceed {limits.max_bytes} characters or items")
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise RenderLimit(f"a number would exceed {_MAX_INT_BITS} bits")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > _MAX_INT_BITS:
            raise RenderLimit(f"a number would exceed {_MAX_INT_BITS} bits")
    if isinstance(exponent, int | float) and abs(exponent) > 10_000:
        raise RenderLimit("an exponent is too large")


def _weight(parts: Iterable[nodes.Node | None]) -> int:
    """Work of one pass over some template code: its AST nodes, plus its literal text by
    64 characters (text written into a `{% set %}` block or `caller()` is not output yet,
    so the output bound alone would not see it)."""
    total = 1
    for part in parts:
        if part is None:
            continue
        total += 1
        for node in part.find_all(nodes.Node):
            total += 1 + _literal_length(node) // 64
    return total


def _literal_length(node: nodes.Node) -> int:
    if isinstance(node, nodes.TemplateData):
        return len(node.data)
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return len(node.value)
    return 0


def _swap_concats(node: nodes.Node, make: Callable[[nodes.Concat], nodes.Node]) -> None:
    """Replace every `Concat` below `node` by `make(concat)`, innermost first, in one walk."""
    for field in node.fields:
        value = getattr(node, field, None)
        if isinstance(value, nodes.Node):
            _swap_concats(value, make)
            if isinstance(value, nodes.Concat):
                setattr(node, field, make(value))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, nodes.Node):
                    _swap_concats(item, make)
                    if isinstance(item, nodes.Concat):
                        value[index] = make(item)
