"""The compact byte layout of an entry stored in Redis.

    byte 0       format version (FORMAT_VERSION)
    bytes 1-2    header length N, unsigned big-endian
    bytes 3..3+N orjson header: {"c": content_type, "s": stored_at, "e": expires_at, "m": meta}
    the rest     the raw value bytes, untouched

Anything else (another version, a truncated or malformed header) raises ``DecodeError``;
the Redis tier treats that as a miss and deletes the key. Bump FORMAT_VERSION whenever
the layout changes: old processes then drop new values instead of misreading them.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from promptrelay.cache.base import CacheEntry

__all__ = ["FORMAT_VERSION", "DecodeError", "decode_entry", "encode_entry"]

FORMAT_VERSION = 1
_MAX_HEADER = 0xFFFF
_VERSION_BYTE = bytes((FORMAT_VERSION,))


class DecodeError(ValueError):
    """Stored bytes are not an entry this version can read."""


def encode_entry(entry: CacheEntry) -> bytes:
    header: dict[str, Any] = {"c": entry.content_type, "s": entry.stored_at}
    if entry.expires_at is not None:
        header["e"] = entry.expires_at
    if entry.meta:
        header["m"] = dict(entry.meta)
    encoded = orjson.dumps(header)
    if len(encoded) > _MAX_HEADER:
        raise ValueError("entry metadata is too large to store")
    return b"".join((_VERSION_BYTE, len(encoded).to_bytes(2, "big"), encoded, entry.value))


def decode_entry(data: bytes) -> CacheEntry:
    if len(data) < 3 or data[0] != FORMAT_VERSION:
        raise DecodeError("unknown format version")
    end = 3 + int.from_bytes(data[1:3], "big")
    if end > len(data):
        raise DecodeError("truncated header")
    try:
        header = orjson.loads(data[3:end])
    except orjson.JSONDecodeError:
        raise DecodeError("malformed header") from None
    if not isinstance(header, dict):
        raise DecodeError("malformed header")
    content_type = header.get("c")
    stored_at = header.get("s")
    expires_at = header.get("e")
    meta = header.get("m")
    if not isinstance(content_type, str) or not _is_number(stored_at):
        raise DecodeError("malformed header")
    if not (expires_at is None or _is_number(expires_at)):
        raise DecodeError("malformed header")
    if not (meta is None or _is_meta(meta)):
        raise DecodeError("malformed header")
    return CacheEntry(
        value=data[end:],
        stored_at=float(stored_at),
        content_type=content_type,
        expires_at=None if expires_at is None else float(expires_at),
        meta=meta,
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_meta(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(item, str) or _is_number(item) for item in value.values()
    )
