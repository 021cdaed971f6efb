"""What telemetry costs: cache hits with TELEMETRY_ENABLED=true vs false.

Two measurements, both on cache hits (bench/same_post.lua posts one prompt: after the
first request every answer is a memory-cache hit, the path where a fixed per-request
cost shows most):

1. Throughput. The fake Anthropic API and three `promptrelay serve` processes, with
   telemetry on, off, and off again, driven by wrk in `--rounds` rounds; the result is
   the median of the paired (on, off) ratios. All servers are pinned to core 1, wrk to
   core 0. The second "off" server is an A/A control: its ratio to the first should be
   1.000, and how far it is shows what this machine can resolve (on this shared 2-core
   machine, up to 30% in some runs).
2. Instructions (bench/callgrind.py), which that noise cannot move: each server runs
   under callgrind, and a hit's cost is the instructions counted over `--cg-seconds` of
   wrk, less what the server does idle in as long, divided by the hits it served. They
   run with the sampler idle (TELEMETRY_INTERVAL=3600), because under valgrind requests
   are ~50 times slower and the sampler's share would be inflated as much; a third
   server, telemetry on with the default interval, counts what the sampler and the
   loop-lag probe cost per second of wall time, spread over the hits per second
   measured in (1).

Throughput of a server that is busy on one core is the inverse of its CPU per request;
telemetry adds no system calls per request, so its share of a hit's user-space
instructions is an upper bound on the throughput it costs. That share is the check.

    .venv/bin/python bench/telemetry.py [--duration 3] [--rounds 7] [--concurrency 16]
        [--cg-seconds 10] [--no-callgrind] [--quick] [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchkit import (
    LoadResult,
    Service,
    WrkLoad,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    service_url,
    services,
    write_outputs,
)
from callgrind import CallgrindServer, callgrind_available
from overhead import promptrelay_service

ON, OFF = "telemetry on", "telemetry off"
CONTROL = "telemetry off, a second process"  # the A/A control: the noise between processes
SAMPLER = "telemetry on, sampler every 5 s"
TARGET_PCT = 5.0


def promptrelay(upstream_url: str, name: str, telemetry: bool, **env: str) -> Service:
    return promptrelay_service(upstream_url, name, TELEMETRY_ENABLED=str(telemetry).lower(), **env)


def wrk_hits(wrk: WrkLoad, url: str, concurrency: int, seconds: float) -> LoadResult:
    return wrk.run(url, concurrency, seconds, "hits", script="same_post.lua")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, each server once")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cg-seconds", type=float, default=10.0, help="wrk under callgrind")
    parser.add_argument("--no-callgrind", action="store_true", help="throughput only")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 5 s under callgrind")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.cg_seconds = 3, 5.0
    executable = shutil.which("wrk")
    if executable is None:
        sys.exit("wrk is not installed: run `sudo apt-get install wrk`")
    wrk = WrkLoad(executable)
    fake = fake_upstream()
    with services([fake]):
        measured = throughput(wrk, service_url(fake), args)
        counted = None
        if args.no_callgrind:
            log("callgrind skipped (--no-callgrind)")
        elif not callgrind_available():
            log("valgrind is not installed (`sudo apt-get install valgrind`): instructions skipped")
        else:
            counted = instructions(wrk, service_url(fake), args.cg_seconds)
    text, data = report(measured, counted, args)
    write_outputs(text, data, args.markdown, args.json)


# --- 1. throughput ----------------------------------------------------------------------


@dataclass
class Throughput:
    runs: dict[str, list[LoadResult]]
    cpu: dict[str, float]  # CPU seconds of each server in its timed runs
    user_cpu: dict[str, float]  # of which in user space

    def cpu_us(self, name: str) -> float:
        return self.cpu[name] * 1e6 / max(1, sum(r.requests for r in self.runs[name]))

    def rps(self, name: str) -> float:
        seconds = sum(r.seconds for r in self.runs[name])
        return sum(r.requests for r in self.runs[name]) / seconds if seconds else 0.0

    def paired(self, a: str, b: str) -> tuple[float, list[float]]:
        """(median, sorted list) of the per-round throughput ratios a / b: each round runs
        the servers back to back, so the median shrugs off a round that another job on
        the machine slowed down."""
        pairs = sorted(
            x.rps / y.rps for x, y in zip(self.runs[a], self.runs[b], strict=True) if y.rps
        )
        return (pairs[len(pairs) // 2] if pairs else float("nan")), pairs


def throughput(wrk: WrkLoad, fake_url: str, args: argparse.Namespace) -> Throughput:
    servers = [
        promptrelay(fake_url, ON, True),
        promptrelay(fake_url, OFF, False),
        promptrelay(fake_url, CONTROL, False),
    ]
    affinity = os.sched_getaffinity(0)
    pin = len(affinity) >= 2 and shutil.which("taskset") is not None
    if pin:
        # The servers share core 1; this process, wrk and the fake keep to core 0.
        os.sched_setaffinity(0, {0})
        for server in servers:
            server.argv = ["taskset", "-c", "1", *server.argv]
    names = [server.name for server in servers]
    measured = Throughput(
        {n: [] for n in names}, dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    )
    try:
        with services(servers):
            for service in servers:  # warm-up: the first request stores the answer
                wrk_hits(wrk, service_url(service), args.concurrency, 1)
            for round_ in range(args.rounds):
                shift = round_ % len(servers)  # each server goes first in turn
                for service in servers[shift:] + servers[:shift]:
                    user, system = service.cpu_split()
                    result = wrk_hits(wrk, service_url(service), args.concurrency, args.duration)
                    user_after, system_after = service.cpu_split()
                    measured.cpu[service.name] += user_after - user + system_after - system
                    measured.user_cpu[service.name] += user_after - user
                    log(f"  round {round_ + 1} {service.name}: {result.rps:,.0f} req/s")
                    measured.runs[service.name].append(result)
    finally:
        if pin:
            os.sched_setaffinity(0, affinity)
    return measured


# --- 2. instructions --------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """What callgrind counted between a zero and a dump."""

    instructions: int
    seconds: float  # wall time
    hits: int = 0

    @property
    def per_second(self) -> float:
        return self.instructions / self.seconds


@dataclass(frozen=True)
class Counted:
    busy: dict[str, Window]  # ON, OFF: a window of hits
    idle: dict[str, Window]  # ON, OFF, SAMPLER: a window without requests

    def per_hit(self, name: str) -> float:
        """A hit's own instructions: the busy window less what the server spends in as
        long a time idle (timers, the loop-lag probe), which valgrind's slowness would
        otherwise spread over ~50 times fewer requests than run natively."""
        busy, idle = self.busy[name], self.idle[name]
        return (busy.instructions - idle.per_second * busy.seconds) / busy.hits

    def background_per_second(self) -> float:
        """What the sampler and the loop-lag probe add per second of wall time."""
        return self.idle[SAMPLER].per_second - self.idle[OFF].per_second


def instructions(wrk: WrkLoad, fake_url: str, seconds: float) -> Counted:
    """The three servers under callgrind at once (counts do not depend on the load)."""
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        servers = [
            CallgrindServer(promptrelay(fake_url, ON, True, TELEMETRY_INTERVAL="3600"), Path(tmp)),
            CallgrindServer(promptrelay(fake_url, OFF, False), Path(tmp)),
            CallgrindServer(promptrelay(fake_url, SAMPLER, True), Path(tmp)),
        ]
        log(f"  callgrind: starting {len(servers)} servers under valgrind (~1 min)")
        try:
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(CallgrindServer.__enter__, servers))
                counted = list(pool.map(lambda s: _count(wrk, s, seconds), servers))
        finally:
            for server in servers:
                server.__exit__(None, None, None)
    busy = {name: window for name, window, _ in counted if window is not None}
    return Counted(busy, {name: idle for name, _, idle in counted})


def _count(
    wrk: WrkLoad, server: CallgrindServer, seconds: float
) -> tuple[str, Window | None, Window]:
    """A window of hits (not for the sampler's server), then one as long idle (twice as
    long for the sampler's, to take in several of its periods)."""
    name, url = server.service.name, service_url(server.service)
    wrk_hits(wrk, url, 4, 3)  # warm-up: the answer stored, the code paths taken
    busy = None
    if name != SAMPLER:
        before = _hits_served(url)
        busy = _window(server, lambda: wrk_hits(wrk, url, 4, seconds))
        busy = replace(busy, hits=_hits_served(url) - before)
        log(f"  callgrind {name}: {busy.instructions / busy.hits:,.0f} instructions/hit")
    time.sleep(1.0)
    idle = _window(server, lambda: time.sleep(seconds if busy else 2 * seconds))
    log(f"  callgrind {name} idle: {idle.per_second:,.0f} instructions/s")
    return name, busy, idle


def _hits_served(url: str) -> int:
    """The server's own count of cache hits (read outside the counted windows): exact,
    where wrk's count misses the requests still in flight when it stops."""
    with urllib.request.urlopen(f"{url}/api/cache/stats", timeout=30) as response:
        return int(json.load(response)["savings"]["hits"])


def _window(server: CallgrindServer, work: Callable[[], object]) -> Window:
    server.zero()
    started = time.monotonic()
    work()
    time.sleep(0.5)  # what is still in flight finishes inside the count
    instructions = server.dump()
    return Window(instructions, time.monotonic() - started)


# --- report -----------------------------------------------------------------------------


def _list(ratios: list[float]) -> str:
    return ", ".join(f"{r:.3f}" for r in ratios)


def report(
    measured: Throughput, counted: Counted | None, args: argparse.Namespace
) -> tuple[str, Any]:
    runs = measured.runs
    rows = [
        [
            name,
            ", ".join(f"{r.rps:,.0f}" for r in results),
            f"{measured.rps(name):,.0f}",
            f"{sorted(r.p50_ms for r in results)[len(results) // 2]:.2f}",
            f"{max(r.p99_ms for r in results):.2f}",
            f"{measured.cpu_us(name):.1f}",
            str(sum(r.errors for r in results)),
        ]
        for name, results in runs.items()
    ]
    ratio, pairs = measured.paired(ON, OFF)
    control, control_pairs = measured.paired(CONTROL, OFF)
    user_share = measured.user_cpu[OFF] / measured.cpu[OFF] if measured.cpu[OFF] else 1.0
    header = ["target", "req/s per run", "req/s overall", "median p50 ms", "worst p99 ms"]
    header += ["server CPU µs/req", "errors"]
    lines = [
        "# Telemetry overhead on cache hits (TELEMETRY_ENABLED=true vs false)",
        "",
        *(f"- {line}" for line in machine_lines(sys.argv)),
        "",
        "## Throughput",
        "",
        f"wrk, 1 thread, c={args.concurrency}, bench/same_post.lua (one prompt: all memory "
        f"hits after the first); {args.rounds} rounds of {args.duration:g} s, each server "
        "first in turn.",
        "",
        markdown_table(header, rows),
        "",
        f"- throughput with telemetry on / off, median of the {len(pairs)} paired rounds: "
        f"**{ratio:.3f}** ({(1 - ratio) * 100:+.1f}% cost; negative means on was faster: "
        f"noise); per round: {_list(pairs)}",
        f"- the control (a second server with telemetry off) / off: **{control:.3f}**; per "
        f"round: {_list(control_pairs)}. Identical servers, so any distance from 1.000 is "
        "this machine's noise: a difference smaller than that is not resolved here.",
        f"- server CPU per request on / off / control: {measured.cpu_us(ON):.1f} / "
        f"{measured.cpu_us(OFF):.1f} / {measured.cpu_us(CONTROL):.1f} µs; with telemetry "
        f"off, {user_share * 100:.0f}% of it in user space (the rest is the kernel's "
        "network stack)",
    ]
    data: dict[str, Any] = {
        "machine": machine_lines(sys.argv),
        "ratio_on_off": ratio,
        "ratio_control_off": control,
        "throughput_cost_pct": (1 - ratio) * 100,
        "cpu_us_per_request": {name: measured.cpu_us(name) for name in runs},
        "user_share_of_cpu": user_share,
        "runs": {k: [r.__dict__ | {"rps": r.rps} for r in v] for k, v in runs.items()},
    }
    a_b = f"wrk A/B {(1 - ratio) * 100:+.1f}% (A/A control {(1 - control) * 100:+.1f}%)"
    if counted is None:
        data["checks"] = [
            {
                "target": "telemetry costs < 5% throughput",
                "measured": f"{a_b}; callgrind skipped",
                "met": None,
                "gap": "no instruction count; the A/B alone cannot resolve 5% here",
            }
        ]
        return "\n".join(lines), data
    on, off = counted.per_hit(ON), counted.per_hit(OFF)
    background = counted.background_per_second()
    hits_per_second = measured.rps(ON)
    sampler = background / hits_per_second if hits_per_second else 0.0
    cost_pct = (on + sampler - off) / off * 100
    windows = (("hits", counted.busy), ("idle", counted.idle))
    lines += [
        "",
        "## Instructions (callgrind)",
        "",
        f"wrk, c=4, {args.cg_seconds:g} s of hits per server after a 3 s warm-up, each server "
        "under `valgrind --tool=callgrind` (bench/callgrind.py), then as long idle; a hit's "
        "instructions are the busy window's less the idle rate over as long, divided by the "
        "hits the server counted (`/api/cache/stats`, read outside the window). The sampler's "
        f"own cost: a third server idle for {2 * args.cg_seconds:g} s, less the idle rate "
        f"with telemetry off, spread over the {hits_per_second:,.0f} hits/s measured above.",
        "",
        markdown_table(
            ["server", "window", "instructions", "seconds", "hits", "per hit", "per second"],
            [
                [
                    name,
                    kind,
                    f"{w.instructions:,}",
                    f"{w.seconds:.1f}",
                    f"{w.hits:,}" if w.hits else "",
                    f"{counted.per_hit(name):,.0f}" if w.hits else "",
                    f"{w.per_second:,.0f}",
                ]
                for kind, by_name in windows
                for name, w in by_name.items()
            ],
        ),
        "",
        f"- per hit: {on:,.0f} instructions with telemetry on (sampler idle), {off:,.0f} off: "
        f"{on - off:+,.0f}",
        f"- sampler and loop-lag probe: {background:,.0f} instructions/s, "
        f"{sampler:,.0f} per hit at {hits_per_second:,.0f} hits/s",
        f"- **telemetry costs {cost_pct:+.2f}% of a hit's instructions** (target < "
        f"{TARGET_PCT:g}%): the bound on the throughput it costs. They are user-space "
        f"instructions, {user_share * 100:.0f}% of a hit's CPU time above, so at equal "
        f"speed per instruction the throughput cost is about {cost_pct * user_share:.1f}%.",
    ]
    met = cost_pct < TARGET_PCT
    data |= {
        "instructions": {
            "per_hit": {name: counted.per_hit(name) for name in counted.busy},
            "windows": {
                kind: {name: w.__dict__ for name, w in by_name.items()} for kind, by_name in windows
            },
            "background_per_second": background,
            "sampler_per_hit": sampler,
        },
        "cost_pct": cost_pct,  # what bench/suite.py reports against < 5%
        "cost_pct_of_cpu_time": cost_pct * user_share,
        "checks": [
            {
                "target": "telemetry costs < 5% throughput",
                "measured": f"{cost_pct:+.2f}% of a hit's instructions (callgrind); {a_b}",
                "met": met,
                "gap": "" if met else f"{cost_pct - TARGET_PCT:.2f} points over",
            }
        ],
    }
    return "\n".join(lines), data


if __name__ == "__main__":
    main()
