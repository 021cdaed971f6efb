"""OpenAI content parts and tools as Claude content blocks and tools: pure functions.

Shared by Chat Completions and Responses. Every function raises FieldError naming the
part it cannot translate, in the client's own spelling (`messages[2].content[0]`).
"""

from __future__ import annotations

from typing import Any

import orjson

from promptrelay.api.openai.errors import FieldError

__all__ = [
    "JSON_TOOL",
    "function_tool",
    "image_block",
    "json_arguments",
    "pdf_block",
    "text_of_parts",
    "tool_choice",
]

# The forced tool behind `response_format` / `text.format` JSON answers: its input is the
# answer. The name is ours; a client tool with this name would be read as the answer.
JSON_TOOL = "json_answer"
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of `data:<type>;base64,<data>`."""
    head, comma, data = url.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64") or not data:
        raise FieldError(where, "must be a base64 data URL (data:<type>;base64,<data>)")
    return head[5:-7], data


def image_block(url: Any, where: str) -> dict[str, Any]:
    """A Claude image block from a data: URL (base64) or an http(s) URL."""
    if not isinstance(url, str) or not url:
        raise FieldError(where, "must be a URL string")
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media, data = _data_url(url, where)
    if media not in _IMAGE_TYPES:
        raise FieldError(where, f"image type {media!r}: use jpeg, png, gif or webp")
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def pdf_block(file_data: Any, where: str) -> dict[str, Any]:
    """A Claude document block from a PDF data URL (or bare base64, as some clients send)."""
    if not isinstance(file_data, str) or not file_data:
        raise FieldError(where, "must be a base64 PDF (data:application/pdf;base64,...)")
    media, data = (
        _data_url(file_data, where)
        if file_data.startswith("data:")
        else ("application/pdf", file_data)
    )
    if media != "application/pdf":
        raise FieldError(where, f"file type {media!r}: only PDF files are translated")
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }


def text_of_parts(content: Any, where: str, kinds: tuple[str, ...]) -> str:
    """The text of a content that may only hold text (a string, or text parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise FieldError(where, "must be a string or a list of text parts")
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in kinds:
            raise FieldError(f"{where}[{index}]", f"must be a part of type {' or '.join(kinds)}")
        text = part.get("text", part.get("refusal"))
        if not isinstance(text, str):
            raise FieldError(f"{where}[{index}].text", "must be a string")
        texts.append(text)
    return "".join(texts)


def json_arguments(arguments: Any, where: str) -> Any:
    """A tool call's `arguments` (a JSON string, as OpenAI sends them) as a JSON object."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str):
        raise FieldError(where, "must be a JSON string")
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise FieldError(where, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise FieldError(where, "must encode a JSON object")
    return value


def function_tool(name: Any, description: Any, parameters: Any, where: str) -> dict[str, Any]:
    """A Claude tool from a function's name, description and JSON Schema parameters."""
    if not isinstance(name, str) or not name:
        raise FieldError(f"{where}.name", "required, a non-empty string")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise FieldError(f"{where}.parameters", "must be a JSON Schema object")
    tool: dict[str, Any] = {"name": name, "input_schema": parameters}
    if description is not None:
        if not isinstance(description, str):
            raise FieldError(f"{where}.description", "must be a string")
        tool["description"] = description
    return tool


def tool_choice(choice: Any, where: str) -> dict[str, Any] | None:
    """Claude's tool_choice for OpenAI's; None for `auto` (Claude's default)."""
    if choice is None or choice == "auto":
        return None
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")  # Responses spells it flat, Chat nests it in `function`
        if isinstance(choice.get("function"), dict):
            name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise FieldError(where, "must be auto, none, required or a function by name")
