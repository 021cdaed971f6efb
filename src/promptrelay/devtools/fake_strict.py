"""Messages-body rules the fake upstream enforces as strictly as Anthropic does: pure.

`check_conversation(body)` raises `InvalidRequest` (the fake answers 400
invalid_request_error with its message) when:

- roles do not alternate, or a message's content is empty (an empty string, an empty
  list, an empty text block);
- a block has no known type, or sits where it may not (tool_use outside an assistant
  turn, tool_result outside a user turn);
- a tool_use is not answered by a tool_result in the very next message, a tool_result
  answers no tool_use of the message right before it, or tool_results do not come first;
- thinking is on and the assistant turn that called tools does not start with a
  thinking block carrying a signature the fake itself issued (`signature_for`);
- tools, tool_choice and thinking settings contradict each other.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["InvalidRequest", "check_conversation", "signature_for"]

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result", "search_result"})
_ASSISTANT_BLOCKS = frozenset(
    {"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use"}
)
_SIGNING_KEY = b"fake-upstream-thinking"


class InvalidRequest(ValueError):
    """The body breaks one of Anthropic's rules; the message says which."""


def signature_for(thinking: str) -> str:
    """The signature the fake puts on a thinking block (and expects back unchanged)."""
    return hashlib.blake2b(thinking.encode(), key=_SIGNING_KEY, digest_size=24).hexdigest()


def _blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            raise InvalidRequest(f"{where}.content: messages must have non-empty content")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise InvalidRequest(f"{where}.content: messages must have non-empty content")
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequest(f"{where}.content.{index}: a content block needs a type")
    return content


def _check_block(block: dict[str, Any], role: str, where: str) -> None:
    kind = block["type"]
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    if kind not in allowed:
        raise InvalidRequest(f"{where}.type: {kind!r} blocks are not allowed in {role} turns")
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
        raise InvalidRequest(f"{where}: text content blocks must be non-empty")
    if kind == "tool_use":
        if not isinstance(block.get("id"), str) or not block["id"]:
            raise InvalidRequest(f"{where}.id: Field required")
        if not isinstance(block.get("name"), str) or not _TOOL_NAME.match(block["name"]):
            raise InvalidRequest(f"{where}.name: String should match pattern")
        if not isinstance(block.get("input"), dict):
            raise InvalidRequest(f"{where}.input: Input should be a valid dictionary")
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
            raise InvalidRequest(f"{where}.source: an image needs a base64 or url source")
    if kind == "thinking":
        thinking, signature = block.get("thinking"), block.get("signature")
        if not isinstance(thinking, str) or signature != signature_for(thinking):
            raise InvalidRequest(f"{where}.signature: Invalid `signature` in `thinking` block")


def _check_results(blocks: list[dict[str, Any]], called: list[str], where: str) -> None:
    """A user turn: every tool_result answers a call of the turn before, and every call
    of the turn before has its result here."""
    results = [block.get("tool_use_id") for block in blocks if block["type"] == "tool_result"]
    for index, use_id in enumerate(results):
        if use_id not in called:
            raise InvalidRequest(
                f"{where}.content.{index}: unexpected `tool_use_id` found in `tool_result` "
                "blocks: each tool_result must answer a tool_use of the previous message"
            )
    missing = [use_id for use_id in called if use_id not in results]
    if missing:
        raise InvalidRequest(
            f"{where}: `tool_use` ids were found without `tool_result` blocks immediately "
            f"after: {', '.join(missing)}"
        )


def _results_first(blocks: list[dict[str, Any]], where: str) -> None:
    seen_other = False
    for block in blocks:
        if block["type"] != "tool_result":
            seen_other = True
        elif seen_other:
            raise InvalidRequest(f"{where}: tool_result blocks must come FIRST in the content")


def _check_thinking_turn(blocks: list[dict[str, Any]], where: str) -> None:
    if blocks[0]["type"] not in ("thinking", "redacted_thinking"):
        raise InvalidRequest(
            f"{where}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
            f"`{blocks[0]['type']}`. When `thinking` is enabled, a final `assistant` message "
            "must start with a thinking block (preceding the lastmost set of `tool_use` and "
            "`tool_result` blocks)."
        )


def check_conversation(body: dict[str, Any]) -> None:
    """The rules above, for a body whose top-level fields are already type-checked."""
    thinking = (body.get("thinking") or {}).get("type") == "enabled"
    _check_settings(body, thinking)
    messages: list[dict[str, Any]] = body["messages"]
    called: list[str] = []
    last_calling = -1
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if index and message["role"] == messages[index - 1]["role"]:
            raise InvalidRequest(f"{where}: roles must alternate between user and assistant")
        blocks = _blocks(message, where)
        for position, block in enumerate(blocks):
            _check_block(block, message["role"], f"{where}.content.{position}")
        if message["role"] == "user":
            _results_first(blocks, where)
            _check_results(blocks, called, where)
            called = []
        else:
            called = [block["id"] for block in blocks if block["type"] == "tool_use"]
            if called:
                last_calling = index
    if thinking and last_calling >= 0 and last_calling == len(messages) - 2:
        _check_thinking_turn(_blocks(messages[last_calling], ""), f"messages.{last_calling}")


def _check_settings(body: dict[str, Any], thinking: bool) -> None:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise InvalidRequest("tools: Input should be a valid list")
    names = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools.{index}: Input should be a valid dictionary")
        if tool.get("type") not in (None, "custom") and "input_schema" not in tool:
            names.append(str(tool.get("name")))  # a server tool (web_search_...): no schema
            continue
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequest(f"tools.{index}.name: String should match pattern")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise InvalidRequest(f"tools.{index}.input_schema.type: Input should be 'object'")
        names.append(name)
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: Tool names must be unique")
    choice = body.get("tool_choice")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            raise InvalidRequest(
                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
            )
        if kind == "tool" and choice.get("name") not in names:
            raise InvalidRequest(f"tool_choice.name: no tool named {choice.get('name')!r}")
        if thinking and kind in ("any", "tool"):
            raise InvalidRequest("Thinking may not be enabled when tool_choice forces tool use.")
    if thinking:
        budget = (body.get("thinking") or {}).get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise InvalidRequest("thinking.enabled.budget_tokens: Input should be >= 1024")
        if budget >= body["max_tokens"]:
            raise InvalidRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
        if body.get("temperature", 1) != 1 or "top_p" in body:
            raise InvalidRequest("temperature and top_p may not be set with thinking enabled")
