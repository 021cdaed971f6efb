"""Knobs of the fake Anthropic server (`FakeConfig`) and their validation.

The server reads its `FakeConfig` afresh on every request, so changing a field while it
runs takes effect on the next request. Change knobs through `FakeUpstream.configure`,
`FakeUpstreamThread.configure` or `POST /_fake/config`: all three go through
`validate_knobs`, which rejects unknown names and wrong types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FakeConfig", "validate_knobs"]


@dataclass(slots=True)
class FakeConfig:
    """How the fake answers. All knobs concern the `/v1/*` routes.

    Order of evaluation for `POST /v1/messages`: missing `x-api-key` (401), `hang`,
    invalid body (400), `garbage_next` (a `200` whose body is an HTML page, as a
    misbehaving proxy answers), injected failure (`fail_next`, then `fail_rate`), then
    `latency_ms` +- `jitter_ms` before a successful answer. Injected failures answer
    after `fail_latency_ms` (default at once, like a real overloaded upstream).
    `POST /v1/messages/batches` takes injected failures too (at once); a created batch
    stays `in_progress` for `batch_processing_ms`.

    With `limit_requests` / `limit_input_tokens` / `limit_output_tokens` set, each API key
    has token buckets of that capacity refilling at `limit_*_per_s`: a request that does
    not fit gets Anthropic's 429 `rate_limit_error` with `retry-after`, checked after the
    body is validated and before injected failures; every answer carries the
    `anthropic-ratelimit-*` headers of the buckets that are on.

    Example: `FakeConfig(latency_ms=50, fail_status=529, fail_rate=0.1, retry_after=1)`
    answers after ~50 ms and fails one request in ten with 529 and `retry-after: 1`.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    stream_chunks: int = 5
    chunk_interval_ms: float = 0
    fail_status: int | None = None
    fail_rate: float = 0.0
    retry_after: float | None = None
    fail_next: int = 0
    fail_next_status: int = 529
    fail_latency_ms: float = 0
    hang: bool = False
    stream_error_after: int | None = None
    close_mid_stream_after: int | None = None
    extra_events: bool = True
    batch_processing_ms: float = 0  # a Message Batch stays in_progress this long
    garbage_next: int = 0  # the next N POST /v1/messages answer 200 text/html, not JSON
    # Scripted answers (fake_script.py): tool calls [{"name", "input"}], a JSON answer,
    # and cache tokens reported in usage.
    tool_calls: list[dict[str, Any]] | None = None
    json_answer: dict[str, Any] | None = None
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    # Rate limits per API key (fake_limits.py): bucket capacity (None: off) and refill/s.
    limit_requests: int | None = None
    limit_requests_per_s: float = 1.0
    limit_input_tokens: int | None = None
    limit_input_tokens_per_s: float = 1000.0
    limit_output_tokens: int | None = None
    limit_output_tokens_per_s: float = 1000.0
    # Prompt cache (fake_cache.py): prefixes shorter than this many tokens are not cached.
    prompt_cache_min_tokens: int = 1024


# name -> (kind, nullable). Kinds: "float" (>= 0), "int" (>= 0), "status", "rate", "bool",
# "calls" (a list of {name, input}), "object" (a JSON object).
_KNOBS: dict[str, tuple[str, bool]] = {
    "latency_ms": ("float", False),
    "jitter_ms": ("float", False),
    "stream_chunks": ("int", False),
    "chunk_interval_ms": ("float", False),
    "fail_status": ("status", True),
    "fail_rate": ("rate", False),
    "retry_after": ("float", True),
    "fail_next": ("int", False),
    "fail_next_status": ("status", False),
    "fail_latency_ms": ("float", False),
    "hang": ("bool", False),
    "stream_error_after": ("int", True),
    "close_mid_stream_after": ("int", True),
    "extra_events": ("bool", False),
    "batch_processing_ms": ("float", False),
    "garbage_next": ("int", False),
    "tool_calls": ("calls", True),
    "json_answer": ("object", True),
    "cache_read_tokens": ("int", False),
    "cache_creation_tokens": ("int", False),
    "limit_requests": ("int", True),
    "limit_requests_per_s": ("float", False),
    "limit_input_tokens": ("int", True),
    "limit_input_tokens_per_s": ("float", False),
    "limit_output_tokens": ("int", True),
    "limit_output_tokens_per_s": ("float", False),
    "prompt_cache_min_tokens": ("int", False),
}


def _check_calls(name: str, value: object) -> object:
    if not isinstance(value, list) or not all(
        isinstance(call, dict)
        and isinstance(call.get("name"), str)
        and isinstance(call.get("input", {}), dict)
        for call in value
    ):
        raise ValueError(f"{name} must be a list of {{name, input}} objects")
    return value


def _check(name: str, kind: str, value: object) -> object:
    if kind == "calls":
        return _check_calls(name, value)
    if kind == "object":
        if isinstance(value, dict):
            return value
        raise ValueError(f"{name} must be a JSON object")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be a boolean")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if kind in ("int", "status") and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if kind == "status" and not 100 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status (100-599)")
    if kind == "rate" and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return float(value) if kind in ("float", "rate") else value


def validate_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """Check knob names and values; return them normalised (ints widened to floats).

    Raises ValueError naming the first bad knob.
    """
    clean: dict[str, Any] = {}
    for name, value in knobs.items():
        spec = _KNOBS.get(name)
        if spec is None:
            raise ValueError(f"unknown knob {name!r}; known: {', '.join(_KNOBS)}")
        kind, nullable = spec
        clean[name] = None if value is None and nullable else _check(name, kind, value)
    if clean.get("stream_chunks") == 0:
        raise ValueError("stream_chunks must be at least 1")
    return clean
