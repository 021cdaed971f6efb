"""How fast the dashboard appears: first paint, first contentful paint, first data.

A `promptrelay serve` (memory tier, fake upstream, some traffic so there is something to
draw) and Debian's headless chromium driven by Playwright; each of `--loads` fresh
browser contexts loads /dashboard once. Reported per load, then the median:

- first paint / first contentful paint: the browser's own Paint Timing entries;
- first data: the page's `promptrelay:first-data` mark, set when the first
  /api/dashboard answer has been drawn (what a person waits for).

Timings only, never asserted: the machine is shared, so they are for reading.

    .venv/bin/python bench/dashboard_paint.py [--loads 5] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

from benchkit import (
    API_KEY,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    service_url,
    services,
    write_outputs,
)
from overhead import promptrelay_service

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
_TIMINGS = """() => {
    const paint = Object.fromEntries(
        performance.getEntriesByType("paint").map((e) => [e.name, e.startTime]));
    const data = performance.getEntriesByName("promptrelay:first-data")[0];
    return {first_paint: paint["first-paint"], first_contentful_paint:
        paint["first-contentful-paint"], first_data: data ? data.startTime : null};
}"""
_FIELDS = ("first_paint", "first_contentful_paint", "first_data")


def _traffic(url: str, count: int) -> None:
    for i in range(count):
        body = {
            "model": "m",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": str(i % 5)}],
        }
        request = urllib.request.Request(
            f"{url}/v1/messages",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "x-api-key": API_KEY},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def measure(url: str, loads: int) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    found = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url + "/dashboard")
            page.wait_for_selector("body[data-refreshes]", state="attached")
            found.append(page.evaluate(_TIMINGS))
            context.close()
        browser.close()
    return found


HEADER = ["load", "first paint (ms)", "first contentful paint (ms)", "first data (ms)"]


def run(loads: int) -> tuple[list[list[str]], dict[str, Any]]:
    """(table rows, data) of `loads` page loads against a fresh server with traffic."""
    fake = fake_upstream()
    relay = promptrelay_service(service_url(fake), TELEMETRY_INTERVAL="0.5")
    with services([fake, relay]):
        url = service_url(relay)
        _traffic(url, 50)
        log(f"loading {url}/dashboard {loads} times")
        found = measure(url, loads)
    rows = [[str(i + 1), *(f"{load[f]:.0f}" for f in _FIELDS)] for i, load in enumerate(found)]
    medians = {f: statistics.median(load[f] for load in found) for f in _FIELDS}
    rows.append(["median", *(f"{medians[f]:.0f}" for f in _FIELDS)])
    return rows, {"loads": found, "median_ms": medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: run `make chromium`")
    rows, data = run(args.loads)
    text = "\n".join([*machine_lines(sys.argv), "", markdown_table(HEADER, rows)])
    write_outputs(text, data, args.markdown, args.json)


if __name__ == "__main__":
    main()
