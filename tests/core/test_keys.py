"""Cache keys: every listed field changes the key; JSON spelling and ignored fields do not."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from promptrelay.cache.keys import KeyParts, cache_key
from promptrelay.core.cache_control import parse_cache_control

PARTS = KeyParts(
    namespace="default",
    upstream="https://api.anthropic.com",
    version="2023-06-01",
    beta=None,
    model="claude-sonnet-4-6",
)

# orjson parses request bodies; it reads integers beyond 64 bits as floats, so keys only
# ever see 64-bit integers.
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = st.none() | st.booleans() | ints | st.text(max_size=20)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


values = st.recursive(scalars, _containers, max_leaves=12)
bodies = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k not in ("stream", "metadata")),
    values,
    min_size=1,
    max_size=6,
)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(bodies, st.integers())
def test_key_order_whitespace_stream_and_metadata_do_not_change_the_key(body, seed):
    respelled = json.loads(json.dumps(_shuffled(body, random.Random(seed)), indent=2))
    respelled["stream"] = True
    respelled["metadata"] = {"user_id": str(seed)}
    assert cache_key(respelled, PARTS) == cache_key(body, PARTS)


@given(bodies, st.text(min_size=1, max_size=12), values)
def test_changing_any_body_field_changes_the_key(body, name, value):
    if name in ("stream", "metadata") or body.get(name, object()) == value:
        return
    changed = {**body, name: value}
    assert cache_key(changed, PARTS) != cache_key(body, PARTS)


@given(
    bodies,
    st.sampled_from(["namespace", "upstream", "version", "beta", "model"]),
    st.text(alphabet="abcdef0123456789", min_size=1, max_size=16),
)
def test_changing_any_outside_part_changes_the_key(body, field, value):
    original = getattr(PARTS, field)
    if value == original:
        return
    assert cache_key(body, replace(PARTS, **{field: value})) != cache_key(body, PARTS)


def test_offline_and_live_never_share_a_key():
    body = {"model": "m", "messages": []}
    assert cache_key(body, replace(PARTS, upstream="offline")) != cache_key(body, PARTS)


def test_cache_control_directives():
    assert parse_cache_control(None).lookup and parse_cache_control(None).store
    no_cache = parse_cache_control(b"no-cache")
    assert (no_cache.lookup, no_cache.store, no_cache.bypass) == (False, True, False)
    no_store = parse_cache_control(b"No-Store")
    assert (no_store.lookup, no_store.store, no_store.bypass) == (False, False, True)
    assert parse_cache_control(b"max-age=30, foo").max_age == 30
    assert parse_cache_control(b"max-age=oops").max_age is None
    assert not parse_cache_control(b"max-age=0").lookup
