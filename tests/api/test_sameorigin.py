"""The cross-site checks on admin routes: pure rules, then over HTTP."""

from __future__ import annotations

import aiohttp
import pytest

from promptrelay.api.sameorigin import cross_site_refusal, host_name

HOST = {"host": "127.0.0.1:8080"}


def _refusal(headers: dict[str, str], method: str = "POST", keyed: bool = False) -> str | None:
    return cross_site_refusal(headers, method=method, keyed=keyed, allowed_hosts=["gw.example"])


@pytest.mark.parametrize(
    ("host", "name"),
    [("127.0.0.1:8080", "127.0.0.1"), ("[::1]:80", "::1"), ("GW.example", "gw.example"), ("", "")],
)
def test_host_name(host, name):
    assert host_name(host) == name


def test_a_json_post_from_the_gateways_own_origin_passes():
    json_post = {**HOST, "content-type": "application/json", "origin": "http://127.0.0.1:8080"}
    assert _refusal(json_post) is None
    assert _refusal({**HOST, "x-promptrelay-admin": "1"}) is None
    assert _refusal({**HOST, "authorization": "Bearer k"}, keyed=True) is None
    assert _refusal({"host": "gw.example", "content-type": "application/json"}) is None


def test_what_a_cross_site_form_can_send_is_refused():
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        refusal = _refusal({**HOST, "content-type": content_type})
        assert refusal is not None and "x-promptrelay-admin" in refusal
    other = {**HOST, "content-type": "application/json", "origin": "http://evil.example"}
    assert "Origin" in (_refusal(other) or "")
    assert _refusal({**HOST, "origin": "null", "x-promptrelay-admin": "1"}) is not None
    # DELETE and PUT need a CORS preflight, so they need no proof header; Origin still counts
    assert _refusal(HOST, method="DELETE") is None
    assert _refusal({**HOST, "origin": "http://evil.example"}, method="DELETE") is not None


def test_a_rebinding_host_is_refused():
    rebound = {"host": "evil.example:8080", "x-promptrelay-admin": "1"}
    assert "Host" in (_refusal(rebound) or "")
    assert "Host" in (_refusal(rebound, method="GET") or "")
    # with an admin key a read needs the key, which a rebinding page does not have
    assert _refusal(rebound, method="GET", keyed=True) is None
    assert _refusal(rebound, keyed=True) is not None


async def _status(session: aiohttp.ClientSession, method: str, url: str, **kwargs) -> int:
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        return response.status


async def test_admin_routes_apply_the_checks(gateway_factory):
    gateway = gateway_factory(admin_hosts="gw.example")
    clear, evil = f"{gateway.url}/api/cache/clear", {"origin": "http://evil.example"}
    async with aiohttp.ClientSession() as session:
        async with session.post(clear) as plain:
            assert plain.status == 403
            assert (await plain.json())["error"]["type"] == "permission_error"
        assert await _status(session, "POST", clear, json={}) == 200
        assert await _status(session, "POST", clear, json={}, headers=evil) == 403
        rebound = {"host": "evil.example"}
        assert await _status(session, "GET", f"{gateway.url}/api/dashboard", headers=rebound) == 403
        assert await _status(session, "GET", f"{gateway.url}/dashboard", headers=rebound) == 403
        named = {"host": "gw.example"}
        assert await _status(session, "GET", f"{gateway.url}/api/cache/stats", headers=named) == 200
