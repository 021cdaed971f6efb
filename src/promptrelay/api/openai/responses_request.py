"""A Responses API request as a Claude Messages body: pure, no I/O.

    responses_request(body, model=..., default_max_tokens=..., history=[...])

`input` is a string or a list of items: messages of any role (`system` and `developer`
join `instructions` as Claude's `system`), with `input_text` / `input_image` /
`input_file` parts (and `output_text` in assistant history); `function_call` items are
tool_use blocks, `function_call_output` items tool_result blocks; `reasoning` items are
skipped (a stored conversation keeps Claude's own signed thinking instead). `history`
holds the Claude messages of a `previous_response_id`, answer included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptrelay.api.openai.chat_request import merge_turns
from promptrelay.api.openai.content import (
    function_tool,
    image_block,
    json_arguments,
    pdf_block,
    text_of_parts,
    tool_choice,
)
from promptrelay.api.openai.errors import FieldError
from promptrelay.api.openai.options import (
    apply_json_answer,
    apply_reasoning,
    apply_sampling,
    max_tokens_of,
)

__all__ = ["ResponsesRequest", "responses_request"]


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    body: dict[str, Any]  # the Claude Messages body (without `stream`)
    stream: bool
    store: bool
    json_answer: bool
    previous_response_id: str | None


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise FieldError(f"{where}.file_id", "uploaded files are not available")
        return image_block(part.get("image_url"), f"{where}.image_url")
    if kind == "input_file":
        if part.get("file_id") is not None:
            raise FieldError(f"{where}.file_id", "uploaded files are not available")
        return pdf_block(part.get("file_data"), f"{where}.file_data")
    raise FieldError(where, "must be an input_text, input_image or input_file part")


def _content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise FieldError(where, "must be a string or a non-empty list of content parts")
    return [_part(part, f"{where}[{index}]") for index, part in enumerate(content)]


def _output(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise FieldError(f"{where}.call_id", "required, the id of the function call answered")
    output = item.get("output")
    text = (
        output
        if isinstance(output, str)
        else text_of_parts(output, f"{where}.output", ("input_text", "output_text", "text"))
    )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if text:
        block["content"] = text
    return block


def _call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id:
        raise FieldError(f"{where}.call_id", "required, a non-empty string")
    if not isinstance(name, str) or not name:
        raise FieldError(f"{where}.name", "required, a non-empty string")
    arguments = json_arguments(item.get("arguments"), f"{where}.arguments")
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def _item(item: Any, where: str, system: list[str]) -> tuple[str, Any] | None:
    if not isinstance(item, dict):
        raise FieldError(where, "must be an input item (an object)")
    kind = item.get("type", "message")
    if kind == "function_call":
        return "assistant", [_call(item, where)]
    if kind == "function_call_output":
        return "user", [_output(item, where)]
    if kind in ("reasoning", "item_reference"):
        return None
    if kind != "message":
        raise FieldError(
            f"{where}.type", "must be a message, function_call or function_call_output"
        )
    role = item.get("role")
    if role in ("system", "developer"):
        text = text_of_parts(item.get("content"), f"{where}.content", ("input_text", "text"))
        if text:
            system.append(text)
        return None
    if role not in ("user", "assistant"):
        raise FieldError(f"{where}.role", "must be user, assistant, system or developer")
    content = _content(item.get("content"), f"{where}.content")
    if role == "assistant" and isinstance(content, list):
        content = [block for block in content if block.get("text") != ""] or None
    return (role, content) if content else None


def _input(value: Any, history: list[dict[str, Any]], instructions: Any) -> tuple[list[Any], Any]:
    system: list[str] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise FieldError("instructions", "must be a string")
        if instructions:
            system.append(instructions)
    turns: list[tuple[str, Any]] = [(m["role"], m["content"]) for m in history]
    if isinstance(value, str):
        turns.append(("user", value))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            turn = _item(item, f"input[{index}]", system)
            if turn is not None:
                turns.append(turn)
    else:
        raise FieldError("input", "required, a string or a non-empty list of input items")
    if not any(role == "user" for role, _ in turns):
        raise FieldError("input", "needs at least one user message")
    joined = system[0] if len(system) == 1 else [{"type": "text", "text": t} for t in system]
    return merge_turns(turns), joined if system else None


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise FieldError("tools", "must be a list of function tools")
    translated = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise FieldError(f"tools[{index}].type", f"{kind!r}: only function tools are supported")
        translated.append(
            function_tool(
                tool.get("name"), tool.get("description"), tool.get("parameters"), f"tools[{index}]"
            )
        )
    out["tools"] = translated
    choice = tool_choice(body.get("tool_choice"), "tool_choice")
    if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice


def _previous(body: dict[str, Any]) -> str | None:
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise FieldError("previous_response_id", "must be a response id")
    return previous


def responses_request(
    body: dict[str, Any],
    *,
    model: str,
    default_max_tokens: int,
    history: tuple[dict[str, Any], ...] = (),
) -> ResponsesRequest:
    """Raises FieldError (400) for what cannot be translated; `model` is already resolved."""
    if body.get("background"):
        raise FieldError("background", "background responses are not available")
    messages, system = _input(body.get("input"), list(history), body.get("instructions"))
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens_of(body, ("max_output_tokens",), default_max_tokens),
        "messages": messages,
    }
    if system is not None:
        out["system"] = system
    apply_sampling(body, out)
    _tools(body, out)
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    json_answer = apply_json_answer(fmt, "text.format", out)
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    apply_reasoning(effort, "reasoning.effort", out)
    stream, store = body.get("stream", False), body.get("store", True)
    if not isinstance(stream, bool):
        raise FieldError("stream", "must be true or false")
    if not isinstance(store, bool):
        raise FieldError("store", "must be true or false")
    return ResponsesRequest(out, stream, store, json_answer, _previous(body))
