"""Which paths may go to the upstream, and the one function that builds an upstream URL.

A client's path is judged on its raw form, as it came in the request line (ASGI's
`raw_path`), and decoded exactly once here; the server's decoded `path` is never trusted,
since `%2e%2e` decodes to `..` there and the HTTP client would resolve it. The rules:

- raw characters: RFC 3986 `pchar` and `/` only (no space, backslash, quote, `#`,
  control character or non-ASCII byte);
- every `%` starts an escape of two hex digits, which must not decode to `/` or `\\`
  (an encoded slash), to `%` (double encoding: `%252f`) or to a control character or NUL;
- the decoded path is UTF-8, strictly under `/v1/`, and has no empty segment (`//`;
  one trailing `/` is allowed) and no `.` or `..` segment, also not one spelled with
  path parameters (`..;x`, `.;`, `;x`), which servers such as Tomcat and Jetty (a
  corporate egress proxy behind a prefixed base, say) strip before resolving dots.
  Refused, never repaired: dot removal would forward a path the client did not write.

What goes upstream is the decoded path re-encoded in one canonical spelling, so the
upstream sees the same bytes however the client spelled them. `upstream_url` accepts only
a canonical target, so no caller can build a URL outside `<base>/v1/`, even with a base
that has a path prefix; the URL is marked `encoded` so aiohttp sends it byte for byte
instead of normalising it again.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from urllib.parse import quote

from yarl import URL

from promptrelay.errors import InvalidRequest

__all__ = ["UnsafePath", "canonical_target", "is_plain_id", "upstream_url"]

_RAW = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_QUERY = re.compile(rb"[\x21-\x7e]*")  # printable ASCII; '#' refused apart
# Escapes refused wherever they appear: slash, backslash, percent, controls, DEL.
_FORBIDDEN = frozenset([0x2F, 0x5C, 0x25, 0x7F, *range(0x20)])
_SAFE = "!$&'()*+,;=:@"  # pchar beyond unreserved: kept as they are when re-encoding
_PLAIN_ID = re.compile(r"[A-Za-z0-9_\-]{1,200}")


class UnsafePath(InvalidRequest):
    """A path that could leave the upstream's `/v1/` (or is not one we forward)."""


def canonical_target(raw_path: bytes, query: bytes = b"") -> str:
    """The path (and query) to forward upstream, from the client's raw path.

    Raises UnsafePath (a 400) for anything outside the rules in the module docstring.
    """
    if _RAW.fullmatch(raw_path) is None:
        raise UnsafePath("path: only RFC 3986 path characters are allowed")
    decoded = _decode(raw_path)
    path = _canonical(decoded)
    if not query:
        return path
    if _QUERY.fullmatch(query) is None or b"#" in query:
        raise UnsafePath("query: only printable ASCII characters are allowed")
    return f"{path}?{query.decode('ascii')}"


def _decode(raw: bytes) -> str:
    def unescape(match: re.Match[bytes]) -> bytes:
        byte = int(match.group(1), 16)
        if byte in _FORBIDDEN:
            raise UnsafePath(
                "path: encoded slashes, backslashes, percent signs and control characters "
                "are not allowed"
            )
        return bytes((byte,))

    if raw.count(b"%") != len(_ESCAPE.findall(raw)):
        raise UnsafePath("path: every '%' must start an escape of two hex digits")
    try:
        return _ESCAPE.sub(unescape, raw).decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath("path: escapes must decode to UTF-8") from None


def _canonical(decoded: str) -> str:
    segments = decoded.split("/")
    if segments[-1] == "" and len(segments) > 3:
        segments.pop()  # one trailing slash: kept below
        trailing = "/"
    else:
        trailing = ""
    if segments[:2] != ["", "v1"] or len(segments) < 3:
        raise UnsafePath("path: only paths under /v1/ are passed through")
    for segment in segments[2:]:
        if segment.partition(";")[0] in ("", ".", ".."):
            raise UnsafePath(
                "path: empty, '.' and '..' segments (with or without ';' parameters) "
                "are not allowed"
            )
    return "/".join(quote(segment, safe=_SAFE) for segment in segments) + trailing


def is_plain_id(value: object) -> TypeGuard[str]:
    """An id (batch, file, model) that is safe as one path segment as it is."""
    return isinstance(value, str) and _PLAIN_ID.fullmatch(value) is not None


def upstream_url(base: str, target: str) -> URL:
    """`base` + `target`, where target is a canonical `/v1/...` path with an optional query
    (what `canonical_target` returns). Raises UnsafePath for any other target, so the URL
    never leaves `<base>/v1/`. `base` has no trailing slash (settings strip it)."""
    path, _, query = target.partition("?")
    if canonical_target(path.encode("utf-8"), query.encode("utf-8")) != target:
        raise UnsafePath("upstream path: not a canonical path under /v1/")
    return URL(base + target, encoded=True)
