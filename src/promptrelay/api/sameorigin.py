"""Who may write through an admin route: the checks against cross-site requests.

A loopback-only gateway (no ADMIN_API_KEY) trusts the client's address, which a web page
in the user's browser shares. Two things keep such a page from driving it:

- a POST (the one write a cross-site form or a no-CORS `fetch` can send without a CORS
  preflight, which promptrelay never grants; PUT and DELETE always need one) must carry
  something only a preflighted request can: an `X-Promptrelay-Admin` header, a
  credential header, or a JSON content type;
- the Host header must name this gateway (a loopback name, HOST, or one of ADMIN_HOSTS),
  which defeats DNS rebinding, and an Origin header, when present, must be that same host.

Pure functions of the request's headers; `admin.py` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from promptrelay.settings import is_loopback_host

__all__ = ["ADMIN_HEADER", "cross_site_refusal", "host_name"]

ADMIN_HEADER = "x-promptrelay-admin"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PROOF_HEADERS = (ADMIN_HEADER, "authorization", "x-api-key")


def host_name(host: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:8080' -> '::1', 'Example.org' -> 'example.org'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _host_allowed(host: str, allowed: Iterable[str]) -> bool:
    name = host_name(host)
    return bool(name) and (is_loopback_host(name) or name in {a.lower() for a in allowed})


def cross_site_refusal(
    headers: Mapping[str, str], *, method: str, keyed: bool, allowed_hosts: Iterable[str]
) -> str | None:
    """Why this admin request looks cross-site (None: it does not).

    `headers` has lower-case names. Writes are checked by the rules above. Reads only by
    the Host, and only without an admin key (`keyed` false): there a rebinding page could
    otherwise read the figures; with a key it cannot, lacking the key.
    """
    method = method.upper()
    write = method not in _SAFE_METHODS
    host = headers.get("host", "")
    if (write or not keyed) and not _host_allowed(host, allowed_hosts):
        return (
            f"admin routes: Host {host_name(host) or '(none)'!r} is not this gateway's name "
            "(a loopback name, HOST or one of ADMIN_HOSTS)"
        )
    if not write:
        return None
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.strip().lower():
        return "admin writes: the Origin is another site"
    content_type = headers.get("content-type", "")
    if method == "POST" and not (
        any(headers.get(name) for name in _PROOF_HEADERS)
        or content_type.lower().startswith("application/json")
    ):
        return f"admin POST: send a JSON body or the header {ADMIN_HEADER}: 1"
    return None
