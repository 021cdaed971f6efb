"""CPU per request of servers already running, under the same wrk load, in alternating rounds.

For A/B comparisons on a busy machine: throughput moves with the other jobs, the CPU a
server spends per answer much less. Each round runs wrk against each server in turn and
reads the server's user+system time from /proc before and after; the report is the CPU
over all rounds divided by the answers.

    .venv/bin/python bench/cpu_ab.py --script same_post.lua main=47100 tree=21310
    .venv/bin/python bench/cpu_ab.py --script face_post.lua --arg messages --arg 1 \\
        --concurrency 64 --seconds 4 main=21510 tree=21520

NAME=PORT names a server listening on 127.0.0.1:PORT (its PID is found with `ss`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import uuid

from benchkit import WrkLoad, log

_TICK = os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("servers", nargs="+", metavar="NAME=PORT")
    parser.add_argument("--script", default="unique_post.lua", help="a bench/ wrk script")
    parser.add_argument("--arg", action="append", default=[], help="script argument")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    wrk = WrkLoad("wrk")
    totals = {name: [0.0, 0] for name, _ in (s.split("=") for s in args.servers)}
    for round_ in range(args.rounds):
        for name, port in (s.split("=") for s in args.servers):
            pid = _pid_of(int(port))
            before = _cpu_seconds(pid)
            result = wrk.run(
                f"http://127.0.0.1:{port}",
                args.concurrency,
                args.seconds,
                uuid.uuid4().hex[:8],
                args.script,
                args.arg,
            )
            spent = _cpu_seconds(pid) - before
            totals[name][0] += spent
            totals[name][1] += result.requests
            log(f"round {round_} {name}: {result.requests} answers, {result.errors} errors")
    for name, (spent, answers) in totals.items():
        print(f"{name}: {answers} answers, {spent / max(1, answers) * 1e6:.1f} µs CPU each")


def _pid_of(port: int) -> int:
    listening = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    found = re.search(rf":{port}\s.*?pid=(\d+)", listening)
    if found is None:
        raise SystemExit(f"nothing listens on port {port}")
    return int(found.group(1))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


if __name__ == "__main__":
    main()
