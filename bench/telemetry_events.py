"""What one cache hit's telemetry events cost, counted by callgrind, in one process.

The hit path emits a CacheLookup and a RequestFinished; RequestStats appends each and
folds them 128 at a time. This runs that alone (no server, no sockets) under `valgrind
--tool=callgrind` twice, with 0 and with `--hits` hits, and prints the difference per
hit: the events' construction, delivery and folding, with Python's own start-up and the
imports subtracted. Deterministic to a few instructions, so a change to the events or
the fold can be compared before/after on a busy machine where bench/telemetry.py's
servers under valgrind may not even start in time.

    .venv/bin/python bench/telemetry_events.py [--hits 25600]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def emit_hits(count: int) -> None:
    from promptrelay.core.events import CacheLookup, EventBus, RequestFinished
    from promptrelay.telemetry.stats import RequestStats

    bus = EventBus()
    stats = RequestStats()
    stats.subscribe(bus)
    model = "claude-sonnet-4-6"
    for _ in range(count):  # as gateway.py and hot.py emit them on a hit
        bus.emit(CacheLookup(True, "claude_response", 12.0, 30, model, 10, 20))
        bus.emit(
            RequestFinished("/v1/messages", 200, "HIT", 4e-4, 3e-4, 0.0, 300, 400, False, model)
        )
    stats.drain()
    assert stats.requests == count


def _instructions(count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        argv += [sys.executable, __file__, "--run", str(count)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=25_600)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args()
    if args.run is not None:
        emit_hits(args.run)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: run `make valgrind`")
    idle, busy = _instructions(0), _instructions(args.hits)
    print(f"{(busy - idle) / args.hits:,.0f} instructions per hit ({args.hits:,} hits)")


if __name__ == "__main__":
    main()
