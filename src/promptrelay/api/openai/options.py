"""Sampling, limits, reasoning and JSON-answer options shared by both OpenAI faces.

Pure functions over the decoded request; each writes Claude's fields into `out`.
"""

from __future__ import annotations

from typing import Any

from promptrelay.api.openai.content import JSON_TOOL
from promptrelay.api.openai.errors import FieldError

__all__ = [
    "THINKING_BUDGETS",
    "apply_json_answer",
    "apply_reasoning",
    "apply_sampling",
    "max_tokens_of",
]

# reasoning_effort -> Claude thinking budget (tokens); "minimal"/"none": no thinking.
THINKING_BUDGETS = {"low": 2048, "medium": 8192, "high": 24576}
_NO_THINKING = frozenset({"minimal", "none"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def max_tokens_of(body: dict[str, Any], names: tuple[str, ...], default: int) -> int:
    """The first of `names` that is set (an integer >= 1), else `default`."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FieldError(name, "must be an integer >= 1")
        return value
    return default


def apply_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    """temperature clamped from OpenAI's 0-2 to Claude's 0-1; top_p only without it
    (newer Claude models refuse both at once)."""
    temperature = body.get("temperature")
    if temperature is not None:
        if not _number(temperature) or not 0 <= temperature <= 2:
            raise FieldError("temperature", "must be a number from 0 to 2")
        out["temperature"] = min(float(temperature), 1.0)
    top_p = body.get("top_p")
    if top_p is not None:
        if not _number(top_p) or not 0 <= top_p <= 1:
            raise FieldError("top_p", "must be a number from 0 to 1")
        if temperature is None:
            out["top_p"] = top_p


def apply_reasoning(effort: Any, param: str, out: dict[str, Any]) -> None:
    """Thinking for a reasoning effort: max_tokens grows by the budget, sampling is
    dropped and a forced tool choice becomes auto (Claude refuses both with thinking)."""
    if effort is None or effort in _NO_THINKING:
        return
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise FieldError(param, "must be minimal, low, medium or high")
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    out["max_tokens"] = out["max_tokens"] + budget
    out.pop("temperature", None)
    out.pop("top_p", None)
    choice = out.get("tool_choice")
    if choice is not None and choice.get("type") in ("any", "tool"):
        rest = {k: v for k, v in choice.items() if k == "disable_parallel_tool_use"}
        out["tool_choice"] = {"type": "auto", **rest}


def _schema_of(value: Any, param: str) -> tuple[dict[str, Any], str | None]:
    """(schema, description) of a `json_schema` format (Chat nests it, Responses not)."""
    spec = value.get("json_schema", value) if isinstance(value, dict) else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise FieldError(param, "json_schema needs a JSON Schema object in `schema`")
    description = spec.get("description") if isinstance(spec, dict) else None
    return schema, description if isinstance(description, str) else None


def apply_json_answer(fmt: Any, param: str, out: dict[str, Any]) -> bool:
    """A JSON answer through a forced tool whose input is the answer (works on every
    Claude model, schema included). True when the answer is to be read from that tool."""
    if fmt is None:
        return False
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text" or (isinstance(fmt, dict) and not fmt):
        return False
    if kind == "json_object":
        schema: dict[str, Any] = {"type": "object"}
        description = "Give your answer as this tool's input: a JSON object."
    elif kind == "json_schema":
        schema, described = _schema_of(fmt, param)
        description = described or "Give your answer as this tool's input."
    else:
        raise FieldError(param, "type must be text, json_object or json_schema")
    tool = {"name": JSON_TOOL, "description": description, "input_schema": schema}
    out["tools"] = [*out.get("tools", []), tool]
    if "tool_choice" not in out and len(out["tools"]) == 1:
        out["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    return True
