"""One headless Chromium for the whole session: Debian's `chromium`, driven by Playwright.

Playwright's own browser download cannot work here (and is never run): the tests use the
system binary (`make chromium` installs it) and skip, saying why, when it is missing.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def in_browser() -> Iterator[Callable[..., Any]]:
    """`in_browser(scenario)` runs `scenario(browser)` and returns what it returns.

    Playwright's sync API leaves its event loop marked as running in the thread that
    started it, which would break every asyncio test after this one; so the browser lives
    in a thread of its own, and everything that touches it runs there.
    """
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: run `make chromium`")
    from playwright.sync_api import sync_playwright

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium") as thread:
        playwright = thread.submit(lambda: sync_playwright().start()).result()
        browser = thread.submit(
            playwright.chromium.launch, executable_path=CHROMIUM, args=ARGS
        ).result()

        def run(scenario: Callable[..., Any], *args: Any) -> Any:
            return thread.submit(scenario, browser, *args).result(timeout=90)

        yield run
        thread.submit(browser.close).result()
        thread.submit(playwright.stop).result()


@dataclass
class Watched:
    """A page with every request it made and every console error it logged."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign(self, allowed: str = "http://127.0.0.1:") -> list[str]:
        return [url for url in self.requests if not url.startswith(allowed)]


@contextlib.contextmanager
def watched_page(browser: Any) -> Iterator[Watched]:
    """A page in a fresh context (its own sessionStorage), closed afterwards."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        watched = Watched(context.new_page())
        watched.page.on("request", lambda request: watched.requests.append(request.url))
        watched.page.on(
            "console",
            lambda message: (
                watched.errors.append(message.text) if message.type == "error" else None
            ),
        )
        watched.page.on("pageerror", lambda error: watched.errors.append(str(error)))
        yield watched
    finally:
        context.close()
