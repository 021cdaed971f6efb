"""The pass-through path rule and the one upstream URL builder, as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptrelay.upstream.paths import UnsafePath, canonical_target, is_plain_id, upstream_url


@pytest.mark.parametrize(
    ("raw", "query", "target"),
    [
        (b"/v1/models", b"", "/v1/models"),
        (b"/v1/models/", b"", "/v1/models/"),
        (b"/v1/models", b"limit=2&after_id=x", "/v1/models?limit=2&after_id=x"),
        (b"/v1/%6D%6Fdels", b"", "/v1/models"),
        (b"/v1/files/a%20b", b"", "/v1/files/a%20b"),
        (b"/v1/models/a%3fb", b"", "/v1/models/a%3Fb"),
        (b"/v1/models/caf%c3%a9", b"", "/v1/models/caf%C3%A9"),
        (b"/v1/models/claude:x@y", b"", "/v1/models/claude:x@y"),
    ],
)
def test_valid_paths_get_one_canonical_spelling(raw, query, target):
    assert canonical_target(raw, query) == target


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/../x",
        b"/v1/%2e%2e/x",
        b"/v1/.%2E/x",
        b"/v1/./x",
        b"/v1/x/.",
        b"/v1/..;/x",
        b"/v1/x/..;a=1/..;/y",
        b"/v1/.;/x",
        b"/v1/%2e%2e;/x",
        b"/v1/;x/y",
        b"/v1//x",
        b"/v1/",
        b"/v1",
        b"/v2/x",
        b"/x/v1/y",
        b"v1/x",
        b"",
        b"/v1/a%2fb",
        b"/v1/a%5Cb",
        b"/v1/a\\b",
        b"/v1/a%252fb",
        b"/v1/a%25",
        b"/v1/a%00",
        b"/v1/a%1f",
        b"/v1/a%7F",
        b"/v1/a%",
        b"/v1/a%4",
        b"/v1/a%g1",
        b"/v1/a%ff",
        b"/v1/a b",
        b"/v1/a\x00b",
        b"/v1/a#b",
        b"/v1/a?b",
        b'/v1/a"b',
        b"/v1/\xc3\xa9",
    ],
)
def test_paths_that_could_leave_v1_are_refused(raw):
    with pytest.raises(UnsafePath) as refused:
        canonical_target(raw)
    assert refused.value.status == 400


@pytest.mark.parametrize("query", [b"a=1#frag", b"a=\x00", b"a= b", b"a=\xc3\xa9"])
def test_queries_outside_printable_ascii_are_refused(query):
    with pytest.raises(UnsafePath):
        canonical_target(b"/v1/models", query)


@given(st.binary(max_size=40), st.binary(max_size=10))
def test_whatever_is_accepted_is_canonical_and_under_v1(raw, query):
    try:
        target = canonical_target(b"/v1/" + raw, query)
    except UnsafePath:
        return
    assert canonical_target(target.partition("?")[0].encode(), query) == target
    path = target.partition("?")[0]
    assert path.startswith("/v1/")
    segments = path.split("/")[2:]
    assert all(s not in ("", ".", "..") for s in segments[:-1])
    assert segments[-1] not in (".", "..")
    assert not {"%2F", "%5C", "%25"} & {path[i : i + 3].upper() for i in range(len(path))}


@pytest.mark.parametrize("base", ["https://api.anthropic.com", "http://proxy:8080/anthropic"])
def test_upstream_url_appends_a_canonical_target_to_the_base_unchanged(base):
    url = upstream_url(base, "/v1/models/a%20b?limit=2")
    assert str(url) == base + "/v1/models/a%20b?limit=2"
    assert url.raw_path.endswith("/v1/models/a%20b")  # not re-normalised by yarl


@pytest.mark.parametrize(
    "target",
    ["/v1/../x", "/v1/%2e%2e/x", "/v1/a%2fb", "/v1/a b", "v1/x", "/x", "/v1/%6dodels", "/v1/x?"],
)
def test_upstream_url_refuses_anything_but_a_canonical_target(target):
    with pytest.raises(UnsafePath):
        upstream_url("http://proxy/anthropic", target)


@pytest.mark.parametrize("value", ["msgbatch_01ABC", "file-x_1", "a"])
def test_plain_ids(value):
    assert is_plain_id(value)


@pytest.mark.parametrize("value", ["", "..", "a/b", "a%2fb", "a.b", "a b", None, 7, "x" * 201])
def test_ids_that_are_not_plain(value):
    assert not is_plain_id(value)
