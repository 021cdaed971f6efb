"""The dashboard and /docs in headless Chromium against a live gateway with traffic."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from promptrelay.api.dashboard import ASSETS
from tests.dashboard.conftest import watched_page

# The docs' screenshot is taken by this test; it lands in docs/ only when asked
# (PROMPTRELAY_SCREENSHOT=1), so a test run leaves the work tree clean.
DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "dashboard.png"
STATIC = Path(__file__).parents[2] / "src" / "promptrelay" / "api" / "static"
SECRET_PROMPT = "the prompt text must never reach the page"
FAST = {"telemetry_interval": 0.3, "dashboard_refresh": 0.3}


def _body(text: str, model: str = "claude-sonnet-4-6") -> dict[str, Any]:
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": text}]}


def _request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """(status, parsed JSON) with the standard library: the browser thread has no loop of
    its own to lend to aiohttp."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={**(headers or {})})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _traffic(url: str, bodies: list[dict[str, Any]]) -> list[int]:
    return [_request(f"{url}/v1/messages", body)[0] for body in bodies]


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, answer = _request(url, headers=headers)
    return status, answer


def _wait(page: Any, expression: str, timeout: float = 30.0) -> None:
    """Until `expression` is true in the page. Playwright's wait_for_function evaluates
    a string with eval, which the page's Content-Security-Policy rightly refuses; its
    evaluate goes through the DevTools protocol, which the policy does not govern."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        page.wait_for_timeout(50)


def _refreshes(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.refreshes || 0)"))


def _after_next_refresh(page: Any) -> None:
    """Two more refreshes: the second one's request left after this call began."""
    target = _refreshes(page) + 2
    _wait(page, f"Number(document.body.dataset.refreshes || 0) >= {target}")


def _live(gateway_factory: Any, fake_upstream: Any, **settings: Any) -> Any:
    return gateway_factory(
        anthropic_api_key="gw", anthropic_base_url=fake_upstream.url, **FAST, **settings
    )


def test_dashboard_follows_the_traffic(gateway_factory, fake_upstream, in_browser, tmp_path):
    gateway = _live(gateway_factory, fake_upstream)
    prompts = [_body(f"{SECRET_PROMPT} {i % 4}") for i in range(12)]
    prompts += [_body("other model", model="claude-haiku-4-5")] * 3
    assert set(_traffic(gateway.url, prompts)) == {200}

    def scenario(browser: Any) -> None:
        with watched_page(browser) as watched:
            page = watched.page
            page.goto(gateway.url + "/")
            assert page.url == gateway.url + "/dashboard"
            _wait(page, "Number(document.body.dataset.refreshes || 0) >= 1")
            _after_next_refresh(page)
            status, performance = _get(gateway.url + "/api/performance")
            assert status == 200
            hit_ratio = float(page.get_attribute("#t-hit", "data-value") or "nan")
            assert hit_ratio == performance["cache"]["hit_ratio"] == round(10 / 15, 4)
            total = int(page.get_attribute("#t-total", "data-value") or "-1")
            assert total == performance["requests"]["total"] == 15
            models = page.inner_text("#by-model")
            assert "claude-sonnet-4-6\t12" in models and "claude-haiku-4-5\t3" in models
            assert page.locator("#recent tbody tr").count() == 15
            assert SECRET_PROMPT not in page.content()
            assert page.locator("#charts .chart svg path.line").count() >= 1
            update = os.environ.get("PROMPTRELAY_SCREENSHOT")
            shot = DOCS_SCREENSHOT if update else tmp_path / "dashboard.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            assert set(_traffic(gateway.url, [_body("new traffic")] * 2)) == {200}
            _wait(page, "document.querySelector('#t-total').dataset.value === '17'")
            assert watched.errors == []
            assert watched.requests and watched.foreign() == []

    in_browser(scenario)


def test_an_alert_shows_when_the_upstream_fails(gateway_factory, fake_upstream, in_browser):
    gateway = _live(
        gateway_factory,
        fake_upstream,
        upstream_retries=0,
        circuit_failure_threshold=3,
        alert_min_requests=3,
        alert_loop_lag_ms=60_000,  # a busy test machine's loop lag is not this test's alert
        alert_cpu_percent=10_000,
    )

    def scenario(browser: Any) -> None:
        with watched_page(browser) as watched:
            page = watched.page
            page.goto(gateway.url + "/dashboard")
            _wait(page, "Number(document.body.dataset.refreshes || 0) >= 1")
            assert page.get_attribute("#alerts", "data-count") == "0"
            fake_upstream.configure(fail_rate=1.0, fail_status=500)
            statuses = _traffic(gateway.url, [_body(f"fails {i}") for i in range(6)])
            assert all(status >= 500 for status in statuses)
            _wait(page, "Number(document.querySelector('#alerts').dataset.count) >= 1")
            alerts = page.inner_text("#alerts")
            assert "breaker" in alerts or "failed" in alerts
            _wait(page, "document.querySelector('#t-breaker').innerText === 'open'")
            assert watched.errors == []

    in_browser(scenario)


def test_with_an_admin_key_the_page_asks_for_it(gateway_factory, fake_upstream, in_browser):
    gateway = _live(gateway_factory, fake_upstream, admin_api_key="adm-secret")
    _traffic(gateway.url, [_body("cached")] * 2)

    def scenario(browser: Any) -> None:
        with watched_page(browser) as watched:
            page = watched.page
            page.goto(gateway.url + "/dashboard")
            page.wait_for_selector("#login", state="visible")
            assert page.is_hidden("#main")
            page.fill("#key", "wrong")
            page.click("#login button")
            _wait(page, "document.querySelector('#status').innerText.includes('key')")
            assert page.is_visible("#login") and page.is_hidden("#main")
            page.fill("#key", "adm-secret")
            page.click("#login button")
            page.wait_for_selector("#admin", state="visible")
            _wait(page, "document.querySelector('#namespaces').innerText.includes('default')")
            assert page.evaluate("sessionStorage.getItem('promptrelay.adminKey')") == "adm-secret"
            assert not any("adm-secret" in url for url in watched.requests)
            # the console reports the refused fetches (401) and nothing else
            assert all("401" in error for error in watched.errors), watched.errors
            assert watched.foreign() == []

    in_browser(scenario)


def test_cache_actions_clear_and_warm_with_progress(gateway_factory, fake_upstream, in_browser):
    gateway = _live(gateway_factory, fake_upstream)
    warm = json.dumps([_body(f"warm {i}") for i in range(5)])

    def scenario(browser: Any) -> None:
        with watched_page(browser) as watched:
            page = watched.page
            page.on("dialog", lambda dialog: dialog.accept())  # the confirmations
            page.goto(gateway.url + "/dashboard")
            _wait(page, "Number(document.body.dataset.refreshes || 0) >= 1")
            page.fill("#warm textarea", warm)
            page.click("#warm button")
            _wait(page, "document.querySelector('#warm-result').innerText.includes('stored')")
            assert page.inner_text("#warm-result").startswith("stored 5, already cached 0")
            assert page.evaluate("document.querySelector('#warm-progress').value") == 5
            page.click("#clear button")
            _wait(page, "document.querySelector('#clear-result').innerText.includes('removed')")
            assert page.inner_text("#clear-result").startswith("removed 5 entries")
            assert watched.errors == []

    in_browser(scenario)
    assert fake_upstream.stats()["by_path"]["/v1/messages"] == 5


_CROSS_SITE = """async (target) => {
    const simple = await fetch(target + "/api/cache/clear", {
        method: "POST", mode: "no-cors", body: "{}", headers: {"Content-Type": "text/plain"}});
    let preflighted = "sent";
    try {
        await fetch(target + "/api/cache/clear", {method: "POST", body: "{}",
            headers: {"Content-Type": "application/json", "X-Promptrelay-Admin": "1"}});
    } catch (error) { preflighted = "blocked"; }
    return [simple.type, preflighted];
}"""


def test_a_cross_origin_post_to_an_admin_route_is_refused(
    gateway_factory, fake_upstream, in_browser
):
    gateway = _live(gateway_factory, fake_upstream)
    _traffic(gateway.url, [_body("keep me")])
    other_site = gateway.url.replace("127.0.0.1", "localhost")  # the same server, another origin

    def scenario(browser: Any) -> list[str]:
        with watched_page(browser) as watched:
            watched.page.goto(other_site + "/docs")
            return list(watched.page.evaluate(_CROSS_SITE, gateway.url))

    assert in_browser(scenario) == ["opaque", "blocked"]
    status, stats = _get(gateway.url + "/api/cache/stats")
    assert status == 200 and stats["entries"] == 1  # nothing was cleared


def test_docs_render_offline(gateway_factory, fake_upstream, in_browser):
    gateway = _live(gateway_factory, fake_upstream)

    def scenario(browser: Any) -> None:
        with watched_page(browser) as watched:
            watched.page.goto(gateway.url + "/docs")
            watched.page.wait_for_selector(".swagger-ui .info .title")
            watched.page.wait_for_selector("[data-path='/v1/messages']")
            watched.page.wait_for_selector("[data-path='/api/generate']")
            assert any(url.endswith("/openapi.json") for url in watched.requests)
            assert watched.foreign() == []
            assert watched.errors == []

    in_browser(scenario)


def test_page_assets_stay_small():
    sizes = {
        name: (STATIC / name).stat().st_size for name in ASSETS if name.endswith(("js", "css"))
    }
    assert set(sizes) == {"dashboard.js", "dashboard.css"}
    assert sum(sizes.values()) <= 300 * 1024
