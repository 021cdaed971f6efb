"""What a template is: a draft to save, and the immutable stored version.

A template is saved as a draft (`TemplateDraft`); the store gives every save the next
version number and hands back a `Template`. A stored version never changes: `name@3`
means the same text forever, which is what lets lookups by version be cached without
fear. Only "which version is latest" and "is it deleted" move.

    draft = TemplateDraft.from_json("greet", {"body": "Hi {{ who }}",
                                              "variables": [{"name": "who"}]})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptrelay.errors import InvalidRequest

__all__ = [
    "ALLOWED_PARAMS",
    "CACHE_TTLS",
    "MAX_BODY_CHARS",
    "MAX_VERSION",
    "NAME_PATTERN",
    "Template",
    "TemplateDraft",
    "Variable",
    "VersionInfo",
    "check_name",
    "check_version",
]

# No ':' (cache-key separator), no glob characters, no '@' (name@version in keys).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_BODY_CHARS = 100_000  # the template text itself; its rendered output is bounded apart
_MAX_VARIABLES = 100
# Version numbers live in an INTEGER column: PostgreSQL's int4 ends here. A larger number
# names no version; asking the database for one is an error there, not a miss.
MAX_VERSION = 2**31 - 1
# Messages API parameters a template may carry as defaults.
ALLOWED_PARAMS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "stop_sequences"})
_FIELDS = frozenset(
    {"body", "system", "cache", "model", "params", "description", "variables", "name"}
)
# Anthropic's prompt-cache lifetimes (`cache_control.ttl`): `cache` on a template names one.
CACHE_TTLS = ("5m", "1h")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidRequest(
            f"template name {name[:60]!r}: use 1-128 of A-Z a-z 0-9 _ . - (starting with a"
            " letter or digit)"
        )
    return name


def check_version(version: int | None) -> int | None:
    """A version number a caller asked for: None (latest) or 1..MAX_VERSION."""
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise InvalidRequest(f"version: must be an integer >= 1 and <= {MAX_VERSION}")
    return version


@dataclass(frozen=True, slots=True)
class Variable:
    """A declared variable. Optional ones without a default render as empty."""

    name: str
    required: bool = True
    default: Any = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "required": self.required}
        if self.default is not None:
            data["default"] = self.default
        return data


@dataclass(frozen=True, slots=True)
class TemplateDraft:
    """Everything a save carries; the store adds version and creation time."""

    name: str
    body: str
    system: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    variables: tuple[Variable, ...] = ()
    description: str | None = None
    cache: str | None = None  # "5m" | "1h": the system prompt is a prompt-cache breakpoint

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> TemplateDraft:
        """Validate a JSON object (the PUT body or a seed file); errors name the field."""
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown template field")
        body = data.get("body")
        if not isinstance(body, str) or not body.strip():
            raise InvalidRequest("body: required, a non-empty string")
        if len(body) > MAX_BODY_CHARS:
            raise InvalidRequest(f"body: longer than {MAX_BODY_CHARS} characters")
        return cls(
            name=check_name(name),
            body=body,
            system=_optional_str(data, "system", MAX_BODY_CHARS),
            model=_optional_str(data, "model", 200),
            params=_params(data.get("params")),
            variables=_variables(data.get("variables")),
            description=_optional_str(data, "description", 2000),
            cache=_cache_ttl(data.get("cache")),
        )

    def content(self) -> dict[str, Any]:
        """The fields that make two saves the same template (for idempotent seeding)."""
        return {
            "body": self.body,
            "system": self.system,
            "model": self.model,
            "params": dict(self.params),
            "variables": [v.to_json() for v in self.variables],
            "description": self.description,
            "cache": self.cache,
        }


@dataclass(frozen=True, slots=True)
class Template:
    """One stored, immutable version."""

    draft: TemplateDraft
    version: int
    created_at: float

    @property
    def name(self) -> str:
        return self.draft.name

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            **self.draft.content(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Template:
        """Inverse of `to_json` (cache entries); trusts its input: we wrote it."""
        draft = TemplateDraft(
            name=data["name"],
            body=data["body"],
            system=data.get("system"),
            model=data.get("model"),
            params=data.get("params") or {},
            variables=tuple(Variable(**v) for v in data.get("variables") or ()),
            description=data.get("description"),
            cache=data.get("cache"),
        )
        return cls(draft=draft, version=int(data["version"]), created_at=data["created_at"])


@dataclass(frozen=True, slots=True)
class VersionInfo:
    name: str
    version: int
    created_at: float
    description: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "description": self.description,
        }


def _optional_str(data: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: must be a string")
    if len(value) > limit:
        raise InvalidRequest(f"{name}: longer than {limit} characters")
    return value


def _cache_ttl(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in CACHE_TTLS:
        return value
    raise InvalidRequest('cache: "5m" or "1h" (the prompt-cache lifetime), or null')


def _params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("params: must be an object")
    unknown = sorted(set(value) - ALLOWED_PARAMS)
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_PARAMS))
        raise InvalidRequest(f"params.{unknown[0]}: not a template parameter (allowed: {allowed})")
    max_tokens = value.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise InvalidRequest("params.max_tokens: must be an integer >= 1")
    for name in ("temperature", "top_p"):
        number = value.get(name)
        if number is not None and (not isinstance(number, int | float) or isinstance(number, bool)):
            raise InvalidRequest(f"params.{name}: must be a number")
    return dict(value)


def _variables(value: Any) -> tuple[Variable, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("variables: must be a list of {name, required?, default?}")
    if len(value) > _MAX_VARIABLES:
        raise InvalidRequest(f"variables: at most {_MAX_VARIABLES}")
    seen: set[str] = set()
    result = []
    for index, item in enumerate(value):
        where = f"variables.{index}"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: must be an object with a name")
        extra = sorted(set(item) - {"name", "required", "default"})
        if extra:
            raise InvalidRequest(f"{where}.{extra[0]}: unknown field")
        name = item.get("name")
        if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]{0,63}$", name):
            raise InvalidRequest(f"{where}.name: an identifier (letters, digits, _)")
        if name in seen:
            raise InvalidRequest(f"{where}.name: {name!r} is declared twice")
        seen.add(name)
        default = item.get("default")
        required = item.get("required", default is None)
        if not isinstance(required, bool):
            raise InvalidRequest(f"{where}.required: must be true or false")
        if required and default is not None:
            raise InvalidRequest(f"{where}: a required variable cannot have a default")
        result.append(Variable(name=name, required=required, default=default))
    return tuple(result)
