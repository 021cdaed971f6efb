"""KEYS_FILE: client keys with quotas and budgets, read and checked as a whole.

    keys:
      - name: marketing              # unique; what /api/keys and the errors show
        key: sk-team-marketing       # or key_sha256: <64 hex digits of sha256(key)>
        requests_per_minute: 60      # every limit is optional
        tokens_per_minute: 100000    # input + output tokens
        tokens_per_day: 2000000      # UTC days
        dollars_per_day: 20          # priced from PROVIDERS_FILE, else the built-in table
        dollars_per_month: 300       # UTC calendar months
        models: [claude-sonnet-4-6]  # any other model is a 403

A file that is not valid raises KeysFileError naming the file and the field; nothing of
it is used. Keys are kept only as their sha256 (never in memory as text, never shown).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KeyEntry", "KeysFileError", "key_digest", "load_keys_file", "parse_keys"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_INT_LIMITS = ("requests_per_minute", "tokens_per_minute", "tokens_per_day")
_DOLLAR_LIMITS = ("dollars_per_day", "dollars_per_month")
_FIELDS = {"name", "key", "key_sha256", "models", *_INT_LIMITS, *_DOLLAR_LIMITS}


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    name: str
    digest: str  # sha256 hex of the key
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    dollars_per_day: float | None = None
    dollars_per_month: float | None = None
    models: frozenset[str] | None = None

    @property
    def namespace(self) -> str:
        """The cache namespace a plain key gets (core/auth.py): its hash's first 16."""
        return self.digest[:16]

    @property
    def dollar_capped(self) -> bool:
        return self.dollars_per_day is not None or self.dollars_per_month is not None

    def limits(self) -> dict[str, float]:
        names = (*_INT_LIMITS, *_DOLLAR_LIMITS)
        return {name: value for name in names if (value := getattr(self, name)) is not None}


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys_file(path: str) -> dict[str, KeyEntry]:
    """{sha256 of the key: entry}. Raises KeysFileError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise KeysFileError(f"KEYS_FILE {path}: cannot be read ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise KeysFileError(f"KEYS_FILE {path}: not valid YAML ({error})") from None
    try:
        return parse_keys(data)
    except KeysFileError as error:
        raise KeysFileError(f"KEYS_FILE {path}: {error}") from None


def parse_keys(data: Any) -> dict[str, KeyEntry]:
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeysFileError("keys: required, a list of {name, key | key_sha256, ...}")
    entries: dict[str, KeyEntry] = {}
    names: set[str] = set()
    for index, item in enumerate(data["keys"]):
        entry = _entry(item, f"keys[{index}]")
        if entry.name in names:
            raise KeysFileError(f"keys[{index}].name: {entry.name!r} is used twice")
        if entry.digest in entries:
            raise KeysFileError(f"keys[{index}]: the same key as {entries[entry.digest].name!r}")
        names.add(entry.name)
        entries[entry.digest] = entry
    return entries


def _entry(item: Any, where: str) -> KeyEntry:
    if not isinstance(item, dict):
        raise KeysFileError(f"{where}: must be a mapping")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise KeysFileError(f"{where}.{unknown[0]}: unknown field")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise KeysFileError(f"{where}.name: required, a non-empty string")
    limits: dict[str, Any] = {}
    for field in _INT_LIMITS:
        value = item.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise KeysFileError(f"{where}.{field}: must be a positive integer")
        limits[field] = value
    for field in _DOLLAR_LIMITS:
        value = item.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise KeysFileError(f"{where}.{field}: must be a positive number of dollars")
        limits[field] = None if value is None else float(value)
    return KeyEntry(name.strip(), _digest(item, where), models=_models(item, where), **limits)


def _digest(item: dict[str, Any], where: str) -> str:
    key, hashed = item.get("key"), item.get("key_sha256")
    if (key is None) == (hashed is None):
        raise KeysFileError(f"{where}: give exactly one of key and key_sha256")
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise KeysFileError(f"{where}.key: must be a non-empty string")
        return key_digest(key.strip())
    if not isinstance(hashed, str) or not _HEX64.match(hashed.lower()):
        raise KeysFileError(f"{where}.key_sha256: must be 64 hexadecimal digits")
    return hashed.lower()


def _models(item: dict[str, Any], where: str) -> frozenset[str] | None:
    models = item.get("models")
    if models is None:
        return None
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise KeysFileError(f"{where}.models: must be a list of model names")
    return frozenset(models)
