"""Where promptrelay's CPU goes on its three hot paths: cache hits, misses, streamed misses.

Starts the fake Anthropic API (answering instantly) and `promptrelay serve`, then samples
the server with py-spy (the `bench` extra) while one load keeps it busy:

    hit     wrk, one prompt (bench/same_post.lua): memory-cache hits after the first
    miss    wrk, a new prompt per request (bench/unique_post.lua)
    stream  `promptrelay bench -w stream`: a new prompt per request with "stream": true,
            each answer read to its end (wrk cannot read SSE)

    .venv/bin/python bench/profile_paths.py [--seconds 8] [--markdown PATH]

Sampling slows the server a little, so no throughput is reported here: these tables say
where the time goes, the suite (`make bench`) says how much there is.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable

from benchkit import (
    BIN_DIR,
    WrkLoad,
    fake_upstream,
    log,
    machine_lines,
    service_url,
    services,
    write_outputs,
)
from overhead import promptrelay_service
from profiling import py_spy, record, report

PATHS = ("hit", "miss", "stream")


def drivers(url: str, wrk: WrkLoad, seconds: int) -> dict[str, Callable[[], object]]:
    # the drivers run a second longer than the sampling window, so it never sees idle time
    def stream() -> object:
        argv = [str(BIN_DIR / "promptrelay"), "bench", "--url", url, "-c", "16"]
        argv += ["-d", str(seconds + 1), "-w", "stream"]
        return subprocess.run(argv, capture_output=True, check=True)

    return {
        "hit": lambda: wrk.run(url, 16, seconds + 1, "hits", script="same_post.lua"),
        "miss": lambda: wrk.run(url, 16, seconds + 1, uuid.uuid4().hex[:8]),
        "stream": stream,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="sampling window per path")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    args = parser.parse_args()
    spy, executable = py_spy(), shutil.which("wrk")
    if spy is None or executable is None:
        sys.exit("needs py-spy (pip install -e .[bench]) and wrk (apt-get install wrk)")
    sections = ["# Where promptrelay's CPU goes, per hot path (py-spy)", ""]
    sections += [f"- {line}" for line in machine_lines(sys.argv)]
    fake = fake_upstream()
    with services([fake]):
        relay = promptrelay_service(service_url(fake))
        with services([relay]):
            url = service_url(relay)
            load = drivers(url, WrkLoad(executable), args.seconds)
            for path in PATHS:
                log(f"profiling {path} for {args.seconds} s")
                profile = record(spy, relay.pid, args.seconds, load[path])
                sections += ["", f"## {path}", "", report(profile, 12)]
    write_outputs("\n".join(sections), {}, args.markdown, None)


if __name__ == "__main__":
    main()
