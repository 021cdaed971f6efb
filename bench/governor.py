"""What the governor costs when no limit is near: instructions per cache miss, on vs off.

Two `promptrelay serve` processes (GOVERNOR_ENABLED=true and false) run under callgrind
(bench/callgrind.py) in front of the fake Anthropic API, whose default headers announce
4,000 requests a minute and no token limits, so the governor learns, reserves and
releases on every request but never waits. wrk posts a different prompt on every
request (bench/unique_post.lua): every request is a miss that goes upstream. A miss's
cost is the instructions counted over `--cg-seconds` of wrk, less what the server does
idle in as long, divided by the misses it served (its own count). The check: the
governor adds at most 5%.

    .venv/bin/python bench/governor.py [--cg-seconds 10] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchkit import (
    WrkLoad,
    fake_upstream,
    log,
    machine_lines,
    service_url,
    services,
    write_outputs,
)
from callgrind import CallgrindServer, callgrind_available
from overhead import promptrelay_service

ON, OFF = "governor on", "governor off"
TARGET_PCT = 5.0


def _misses(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/cache/stats", timeout=60) as response:
        return int(json.load(response)["savings"]["misses"])


def _per_miss(
    wrk: WrkLoad, server: CallgrindServer, seconds: float
) -> tuple[str, tuple[float, int]]:
    name, url = server.service.name, service_url(server.service)
    wrk.run(url, 4, 3, f"warmup-{name.replace(' ', '-')}")
    before = _misses(url)
    server.zero()
    started = time.monotonic()
    wrk.run(url, 4, seconds, f"count-{name.replace(' ', '-')}")
    time.sleep(0.5)  # what is still in flight finishes inside the count
    busy = server.dump()
    busy_seconds = time.monotonic() - started
    misses = _misses(url) - before
    time.sleep(1.0)
    server.zero()
    idle_started = time.monotonic()
    time.sleep(seconds)
    idle = server.dump() / (time.monotonic() - idle_started)
    per_miss = (busy - idle * busy_seconds) / misses
    log(f"  callgrind {name}: {misses} misses, {per_miss:,.0f} instructions/miss")
    return name, (per_miss, misses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cg-seconds", type=float, default=10.0, help="wrk under callgrind")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    executable = shutil.which("wrk")
    if executable is None:
        sys.exit("wrk is not installed: run `sudo apt-get install wrk`")
    if not callgrind_available():
        sys.exit("valgrind is not installed: run `sudo apt-get install valgrind`")
    wrk = WrkLoad(executable)
    fake = fake_upstream()
    with services([fake]), tempfile.TemporaryDirectory(prefix="bench-governor-") as tmp:
        url = service_url(fake)
        env = {"TELEMETRY_INTERVAL": "3600"}
        servers = [
            CallgrindServer(
                promptrelay_service(url, ON, GOVERNOR_ENABLED="true", **env), Path(tmp), 1200
            ),
            CallgrindServer(
                promptrelay_service(url, OFF, GOVERNOR_ENABLED="false", **env), Path(tmp), 1200
            ),
        ]
        log("  callgrind: starting 2 servers under valgrind (~1 min)")
        try:
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(CallgrindServer.__enter__, servers))
                measured = dict(pool.map(lambda s: _per_miss(wrk, s, args.cg_seconds), servers))
        finally:
            for server in servers:
                server.__exit__(None, None, None)
    counted = {name: value for name, (value, _) in measured.items()}
    misses = {name: n for name, (_, n) in measured.items()}
    rise = (counted[ON] / counted[OFF] - 1) * 100
    verdict = "meets" if rise <= TARGET_PCT else "misses"
    header = machine_lines(sys.argv)
    text = "\n".join(
        [
            "# Governor: instructions per cache miss (callgrind)",
            "",
            *(f"- {line}" for line in header),
            f"- two `promptrelay serve` under callgrind (GOVERNOR_ENABLED=true / false), "
            f"fake upstream answering at once; wrk -c4 unique prompts (all misses) for "
            f"{args.cg_seconds:g} s each, less the instructions of as long idle",
            "",
            "| server | misses counted | instructions per miss |",
            "|---|---|---|",
            *(f"| {name} | {misses[name]:,} | {value:,.0f} |" for name, value in counted.items()),
            "",
            f"Governor on vs off: {rise:+.2f}% ({verdict} the target of at most "
            f"+{TARGET_PCT:.0f}%).",
        ]
    )
    data: Any = {
        "machine": header,
        "instructions_per_miss": counted,
        "misses": misses,
        "rise_pct": rise,
        "target_pct": TARGET_PCT,
    }
    write_outputs(text, data, args.markdown, args.json)


if __name__ == "__main__":
    main()
