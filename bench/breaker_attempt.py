"""Instructions per breaker attempt with Redis sharing the breaker: a base revision
against this tree, counted by callgrind in one invocation.

One attempt is what the retry loop does per upstream call: `before_call`, then
`record_success` when admitted (breaker closed), or the refusal alone (breaker open). A
child process builds a RedisTier on a throwaway redis-server, a CircuitBreaker with a
RedisBreakerState on it, and runs a warm-up plus K attempts; it runs under
`valgrind --tool=callgrind` twice per source, with K = LOW and K = HIGH, and the
difference of the two totals over HIGH - LOW is the cost of one attempt (start-up and
warm-up cancel out). System calls run in the kernel and Redis's work in its own
process; neither is counted, so a Redis round trip counts only its client side here.
The base revision's `src/` is taken with `git archive` into a temporary directory.

    .venv/bin/python bench/breaker_attempt.py [--base main] [--low 200] [--high 2200]
        [--markdown PATH] [--json PATH]

Needs valgrind (`make valgrind`) and /usr/bin/redis-server (`make redis-server`).
Takes a few minutes (Python starts slowly under valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import REPO_DIR, free_port, log, machine_lines, markdown_table, write_outputs

MODES = ("closed", "open")
_WARM_UP = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--low", type=int, default=200, help="attempts in the short run")
    parser.add_argument("--high", type=int, default=2200, help="attempts in the long run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    parser.add_argument(
        "--child", nargs=3, metavar=("URL", "MODE", "ATTEMPTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        url, mode, attempts = args.child
        asyncio.run(_attempts(url, mode, int(attempts)))
        return
    if shutil.which("valgrind") is None:
        sys.exit("needs valgrind: make valgrind")
    args.base = (
        subprocess.run(
            ["git", "rev-parse", "--short", args.base], cwd=REPO_DIR, capture_output=True, text=True
        ).stdout.strip()
        or args.base
    )
    with tempfile.TemporaryDirectory(prefix="bench-breaker-") as tmp:
        sources = {"base": _archive(args.base, Path(tmp) / "base"), "result": REPO_DIR / "src"}
        counts = _count_all(sources, Path(tmp), args.low, args.high)
    write_outputs(*_report(counts, args), args.markdown, args.json)


async def _attempts(url: str, mode: str, attempts: int) -> None:
    """The child: warm up, then `attempts` attempts on a breaker shared through Redis."""
    from promptrelay.cache.redis import RedisTier
    from promptrelay.resilience.breaker import BreakerMachine
    from promptrelay.resilience.redis_state import RedisBreakerState
    from promptrelay.resilience.shared import CircuitBreaker

    tier = RedisTier(url, socket_timeout=5.0, connect_timeout=5.0)
    breaker = CircuitBreaker(
        BreakerMachine(failure_threshold=1, reset_timeout=3600.0),
        RedisBreakerState(tier, f"bench:breaker:{os.getpid()}"),  # a fresh state per run
        shared_timeout=10.0,
    )
    await tier.start()
    await tier.wait_subscribed(30.0)  # no-op where nothing subscribes (the base)
    if mode == "open":
        decision = await breaker.before_call()
        assert decision.ticket is not None
        await breaker.record_failure(decision.ticket)
    for _ in range(_WARM_UP + attempts):
        decision = await breaker.before_call()
        if decision.ticket is not None:
            await breaker.record_success(decision.ticket)
    assert breaker.state.value == mode, breaker.state
    await tier.close()


def _archive(revision: str, target: Path) -> Path:
    """`src/` of `revision`, unpacked under `target`."""
    done = subprocess.run(
        ["git", "archive", "--format=tar", revision, "src"], cwd=REPO_DIR, capture_output=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"git archive {revision} failed: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(target, filter="data")
    return target / "src"


def _count_all(
    sources: dict[str, Path], workdir: Path, low: int, high: int
) -> dict[str, dict[str, float]]:
    port = free_port()
    redis = subprocess.Popen(
        ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        counts: dict[str, dict[str, float]] = {}
        for name, src in sources.items():
            counts[name] = {}
            for mode in MODES:
                totals = [_instructions(src, url, mode, k, workdir) for k in (low, high)]
                counts[name][mode] = (totals[1] - totals[0]) / (high - low)
                log(f"  {name} {mode}: {counts[name][mode]:,.0f} instructions / attempt")
        return counts
    finally:
        redis.terminate()
        redis.wait(timeout=10)


def _instructions(src: Path, url: str, mode: str, attempts: int, workdir: Path) -> int:
    out = workdir / f"callgrind.{src.parent.name}.{mode}.{attempts}"
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
    argv = [sys.executable, __file__, "--child", url, mode, str(attempts)]
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr[-2000:]}")
    for line in out.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def _report(
    counts: dict[str, dict[str, float]], args: argparse.Namespace
) -> tuple[str, dict[str, Any]]:
    rows = []
    for mode in MODES:
        base, result = counts["base"][mode], counts["result"][mode]
        rows.append([mode, f"{base:,.0f}", f"{result:,.0f}", f"{result / base:.4f}"])
    lines = [
        "# Instructions per breaker attempt, breaker shared through Redis (callgrind)",
        "",
        *(f"- {line}" for line in machine_lines(sys.argv)),
        f"- base: `{args.base}`; result: this tree; (Ir({args.high}) - Ir({args.low})) / "
        f"{args.high - args.low} attempts, each run under callgrind",
        "",
        markdown_table(["breaker", "base", "result", "result ÷ base"], rows),
        "",
    ]
    return "\n".join(lines), {"base": args.base, "counts": counts}


if __name__ == "__main__":
    main()
