"""Parse and validate request bodies into one internal value per call.

Validation is deliberately shallow: it catches what would make the call meaningless or
dangerous (wrong JSON, missing fields, a body trying to redirect the upstream) and names
the field. Everything else, including fields we do not know yet, goes to the upstream
untouched: newer API features must keep working through the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from promptrelay.errors import InvalidRequest
from promptrelay.templates.model import MAX_VERSION

__all__ = [
    "GenerateRequest",
    "TemplateCall",
    "json_object_or_none",
    "parse_generate",
    "parse_json_object",
    "validate_messages_body",
]

# Fields that would let a caller point the gateway (and its key) at another host.
_REDIRECTING = ("api_base", "base_url")
_ROLES = ("user", "assistant")


def json_object_or_none(raw: bytes) -> dict[str, Any] | None:
    """`raw` parsed, when it is a JSON object; None otherwise (for answers we did not
    write: upstream bodies, where a bad one is the upstream's fault, not the caller's)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("request body is empty: send a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reject_redirects(body: dict[str, Any]) -> None:
    for name in _REDIRECTING:
        if name in body:
            raise InvalidRequest(f"{name}: not allowed; the upstream is set by configuration")


def _check_messages(messages: Any, field: str = "messages") -> None:
    if not isinstance(messages, list):
        raise InvalidRequest(f"{field}: must be a list of messages")
    if not messages:
        raise InvalidRequest(f"{field}: must contain at least one message")
    for index, message in enumerate(messages):
        where = f"{field}.{index}"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where}: must be an object with role and content")
        if message.get("role") not in _ROLES:
            raise InvalidRequest(f"{where}.role: must be 'user' or 'assistant'")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise InvalidRequest(f"{where}.content: must be a string or a list of content blocks")


def validate_messages_body(body: dict[str, Any]) -> None:
    """The checks of POST /v1/messages (Anthropic's required fields and their types)."""
    _reject_redirects(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: required, a non-empty string")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: required, an integer >= 1")
    _check_messages(body.get("messages"))
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream: must be true or false")
    if "system" in body and not isinstance(body["system"], str | list):
        raise InvalidRequest("system: must be a string or a list of text blocks")
    if "temperature" in body and not _is_number(body["temperature"]):
        raise InvalidRequest("temperature: must be a number")


@dataclass(frozen=True, slots=True)
class TemplateCall:
    """`{"template", "version"?, "variables"}`: render a stored template for the prompt."""

    name: str
    version: int | None
    variables: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """POST /api/generate, translated into the Messages fields the caller set.

    `body` holds only what the caller set: model and max_tokens are left out when not
    given (the pipeline applies the defaults), and with a template `messages` too (the
    rendered template supplies them, and its own model and max_tokens).
    """

    body: dict[str, Any]
    use_cache: bool
    template: TemplateCall | None = None


_GENERATE_FIELDS = frozenset(
    {"prompt", "messages", "system", "model", "max_tokens", "temperature", "cache", "metadata"}
    | {"template", "version", "variables"}
)


def _template_call(data: dict[str, Any]) -> TemplateCall | None:
    name = data.get("template")
    if name is None:
        for field in ("version", "variables"):
            if field in data:
                raise InvalidRequest(f"{field}: only used with template")
        return None
    if not isinstance(name, str) or not name:
        raise InvalidRequest("template: must be a template name")
    version = data.get("version")
    if version is not None and (not _is_int(version) or not 1 <= version <= MAX_VERSION):
        raise InvalidRequest(f"version: must be an integer >= 1 and <= {MAX_VERSION}")
    variables = data.get("variables", {})
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise InvalidRequest("variables: must be an object of name: value")
    return TemplateCall(name=name, version=version, variables=variables)


def parse_generate(raw: bytes) -> GenerateRequest:
    data = parse_json_object(raw)
    _reject_redirects(data)
    unknown = sorted(set(data) - _GENERATE_FIELDS)
    if unknown:
        raise InvalidRequest(f"{unknown[0]}: unknown field for /api/generate")
    template = _template_call(data)
    sources = [name for name in ("prompt", "messages") if data.get(name) is not None]
    if len(sources) + (template is not None) != 1:
        raise InvalidRequest("send exactly one of prompt, messages or template")
    body: dict[str, Any] = {}
    if template is None and sources[0] == "prompt":
        prompt = data["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest("prompt: must be a non-empty string")
        body["messages"] = [{"role": "user", "content": prompt}]
    elif template is None:
        _check_messages(data["messages"])
        body["messages"] = data["messages"]
    # Left out, the default applies; with a template, null means left out too.
    set_ = {name for name in ("model", "max_tokens") if name in data}
    if template is not None:
        set_ = {name for name in set_ if data[name] is not None}
    if "model" in set_:
        if not isinstance(data["model"], str) or not data["model"]:
            raise InvalidRequest("model: must be a non-empty string")
        body["model"] = data["model"]
    if "max_tokens" in set_:
        if not _is_int(data["max_tokens"]) or data["max_tokens"] < 1:
            raise InvalidRequest("max_tokens: must be an integer >= 1")
        body["max_tokens"] = data["max_tokens"]
    if data.get("system") is not None:
        if not isinstance(data["system"], str):
            raise InvalidRequest("system: must be a string")
        body["system"] = data["system"]
    if data.get("temperature") is not None:
        if not _is_number(data["temperature"]):
            raise InvalidRequest("temperature: must be a number")
        body["temperature"] = data["temperature"]
    use_cache = data.get("cache", True)
    if not isinstance(use_cache, bool):
        raise InvalidRequest("cache: must be true or false")
    return GenerateRequest(body=body, use_cache=use_cache, template=template)
