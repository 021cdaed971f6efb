"""A Chat Completions request as a Claude Messages body: pure, no I/O.

    chat_request(body, default_max_tokens=...) -> ChatRequest(claude body, options)

Rules (the mapping table in docs/openai.md):
- `system` / `developer` messages -> Claude's `system`; consecutive same-role turns merge
  (Claude wants alternating roles); `tool` messages -> `tool_result` blocks of one user
  turn; assistant `tool_calls` -> `tool_use` blocks.
- Refused with a 400 naming the field: n > 1, logprobs, top_logprobs, a non-empty
  logit_bias, audio, modalities other than text. Their no-op values pass.
- Anything else unknown is ignored: OpenAI clients send many fields Claude has no use for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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

__all__ = ["ChatRequest", "chat_request", "merge_turns", "refuse_unsupported"]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]  # the Claude Messages body (without `stream`)
    stream: bool
    include_usage: bool
    json_answer: bool  # the answer is the input of the JSON tool


def refuse_unsupported(body: dict[str, Any]) -> None:
    """400 for fields whose meaning Claude cannot give; their no-op values pass."""
    n = body.get("n")
    if n is not None and n != 1:
        raise FieldError("n", "only 1 choice per request is supported")
    if body.get("logprobs") not in (None, False):
        raise FieldError("logprobs", "log probabilities are not available from Claude")
    if body.get("top_logprobs") not in (None, 0):
        raise FieldError("top_logprobs", "log probabilities are not available from Claude")
    if body.get("logit_bias") not in (None, {}):
        raise FieldError("logit_bias", "token biases are not available from Claude")
    if body.get("audio") is not None:
        raise FieldError("audio", "audio output is not available from Claude")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise FieldError("modalities", 'only ["text"] is supported')


def _user_blocks(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise FieldError(where, "must be a string or a non-empty list of content parts")
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append(image_block(url, f"{at}.image_url.url"))
        elif kind == "file":
            file = part.get("file") if isinstance(part.get("file"), dict) else {}
            if "file_id" in file:
                raise FieldError(f"{at}.file.file_id", "uploaded files are not available")
            blocks.append(pdf_block(file.get("file_data"), f"{at}.file.file_data"))
        else:
            raise FieldError(at, "must be a text, image_url or file part")
    return blocks


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if content is not None:
        text = text_of_parts(content, f"{where}.content", ("text", "refusal"))
        if text:
            blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise FieldError(f"{where}.tool_calls", "must be a list")
    for index, call in enumerate(calls):
        at = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise FieldError(at, "needs an id and a function with name and arguments")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise FieldError(f"{at}.function.name", "required, a non-empty string")
        arguments = json_arguments(function.get("arguments"), f"{at}.function.arguments")
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise FieldError(f"{where}.tool_call_id", "required, the id of the tool call answered")
    text = text_of_parts(message.get("content", ""), f"{where}.content", ("text",))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if text:
        block["content"] = text
    return block


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def merge_turns(turns: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Claude messages from (role, content) turns: consecutive same roles in one turn."""
    messages: list[dict[str, Any]] = []
    for role, content in turns:
        if messages and messages[-1]["role"] == role:
            last = messages[-1]
            last["content"] = _as_blocks(last["content"]) + _as_blocks(content)
        else:
            messages.append({"role": role, "content": content})
    return messages


def _messages(value: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """(Claude messages, system texts) of Chat `messages`."""
    if not isinstance(value, list) or not value:
        raise FieldError("messages", "required, a non-empty list of messages")
    turns: list[tuple[str, Any]] = []
    system: list[str] = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            text = text_of_parts(message.get("content"), f"{where}.content", ("text",))
            if text:
                system.append(text)
        elif role == "user":
            turns.append(("user", _user_blocks(message.get("content"), f"{where}.content")))
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            if blocks:  # an empty assistant turn means nothing; Claude refuses it
                turns.append(("assistant", blocks))
        elif role == "tool":
            turns.append(("user", [_tool_result(message, where)]))
        else:
            raise FieldError(f"{where}.role", "must be system, developer, user, assistant or tool")
    if not turns:
        raise FieldError("messages", "needs at least one user or assistant message")
    return merge_turns(turns), system


def _plain_assistant(messages: list[dict[str, Any]]) -> None:
    """A lone text block as a string: what an Anthropic client would send (shared key)."""
    for message in messages:
        content = message["content"]
        if isinstance(content, list) and len(content) == 1 and content[0]["type"] == "text":
            message["content"] = content[0]["text"]


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise FieldError("tools", "must be a list of function tools")
        translated = []
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            if not isinstance(tool, dict) or tool.get("type", "function") != "function":
                raise FieldError(f"{where}.type", "only function tools are supported")
            spec = tool.get("function")
            if not isinstance(spec, dict):
                raise FieldError(f"{where}.function", "required, an object")
            translated.append(
                function_tool(
                    spec.get("name"), spec.get("description"), spec.get("parameters"), where
                )
            )
        out["tools"] = translated
        choice = tool_choice(body.get("tool_choice"), "tool_choice")
        if body.get("parallel_tool_calls") is False and (choice or {}).get("type") != "none":
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise FieldError("stop", "must be a string or a list of strings")
    return [s for s in stops if s.strip()] or None


def chat_request(body: dict[str, Any], *, model: str, default_max_tokens: int) -> ChatRequest:
    """Raises FieldError (400) for what cannot be translated; `model` is already resolved."""
    refuse_unsupported(body)
    messages, system = _messages(body.get("messages"))
    _plain_assistant(messages)
    names = ("max_completion_tokens", "max_tokens")
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens_of(body, names, default_max_tokens),
        "messages": messages,
    }
    if system:
        out["system"] = (
            system[0] if len(system) == 1 else [{"type": "text", "text": text} for text in system]
        )
    apply_sampling(body, out)
    stop = _stop(body.get("stop"))
    if stop:
        out["stop_sequences"] = stop
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    _tools(body, out)
    json_answer = apply_json_answer(body.get("response_format"), "response_format", out)
    apply_reasoning(body.get("reasoning_effort"), "reasoning_effort", out)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise FieldError("stream", "must be true or false")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(out, stream, include_usage and stream, json_answer)
