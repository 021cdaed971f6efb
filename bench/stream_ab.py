"""The streams stage's load in alternating rounds: the minimal proxy, a base revision's
source and this tree, on one paced fake upstream, CPU per event summed over the rounds.

One stage run on a loaded machine moves by more than the 15% it judges; rounds that
alternate between the servers share whatever else the machine runs. The base is a
`git archive` of `--base` (default main) imported through PYTHONPATH.

    .venv/bin/python bench/stream_ab.py --concurrency 500 --seconds 10 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchkit import (
    BENCH_DIR,
    REPO_DIR,
    Service,
    fake_upstream,
    reference_proxy,
    service_url,
    services,
)
from overhead import promptrelay_service
from suite_scale import raise_nofile


def _load(server: Service, concurrency: int, seconds: float, deltas: int) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH_DIR / "stream_load.py"), "--url", service_url(server)]
    argv += ["--concurrency", str(concurrency), "--duration", str(seconds)]
    argv += ["--deltas", str(deltas), "--expect-events", str(deltas), "--pid", str(server.pid)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision of the base server")
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="new streams per cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deltas", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=25.0)
    args = parser.parse_args()
    c = args.concurrency
    raise_nofile(4 * c + 256)
    pool = str(c + 64)
    with tempfile.TemporaryDirectory(prefix="stream-ab-") as tmp:
        archive = subprocess.run(
            ["git", "archive", args.base, "src"], cwd=REPO_DIR, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        fake = fake_upstream(
            "--stream-chunks", str(args.deltas), "--chunk-interval-ms", f"{args.interval_ms:g}"
        )
        url = service_url(fake)
        proxy = reference_proxy(url, pool=c + 64)
        base = promptrelay_service(url, name="base", MAX_SOCKETS=pool, MAX_FREE_SOCKETS=pool)
        base.env["PYTHONPATH"] = str(Path(tmp) / "src")
        tree = promptrelay_service(url, name="tree", MAX_SOCKETS=pool, MAX_FREE_SOCKETS=pool)
        servers = [proxy, base, tree]
        totals: dict[str, list[float]] = {s.name: [0.0, 0.0] for s in servers}
        with services([fake, *servers]):
            for server in servers:
                _load(server, min(32, c), 1.0, args.deltas)  # warm-up
            for round_ in range(args.rounds):
                for server in servers if round_ % 2 == 0 else servers[::-1]:
                    result = _load(server, c, args.seconds, args.deltas)
                    cpu = result["cpu_seconds"][str(server.pid)]
                    totals[server.name][0] += cpu
                    totals[server.name][1] += result["events"]
                    print(
                        f"round {round_} {server.name}: {cpu * 1e6 / result['events']:.1f} "
                        f"µs/event, p99 {result['last_event_p99_ms']:,.0f} ms, errors "
                        f"{sum(result['errors'].values())}, load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
    floor = totals[proxy.name][0] / totals[proxy.name][1]
    for name, (cpu, events) in totals.items():
        per = cpu / events
        print(f"{name}: {per * 1e6:.1f} µs/event over {events:,.0f} events, {per / floor:.2f}x")


if __name__ == "__main__":
    main()
