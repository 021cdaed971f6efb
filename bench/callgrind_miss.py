"""Instructions per request (a miss, a streamed miss or a hit), for a base revision and for
this tree, in one invocation.

Two `promptrelay serve` processes run under callgrind side by side (bench/callgrind.py),
identical but for the source they import through PYTHONPATH: the base revision and the
result (`--result REV`, or this tree's `src/` as it is). A revision is checked out with
`git worktree add --detach` into a temporary directory, removed again at the end. Each
server has its own fake upstream, so a miss is counted exactly: the fake's POST
/v1/messages count over the window. wrk sends unique prompts (every request a miss, an
upstream call, a store). A miss's cost is the window's instructions less what the same
server executes in as long a time idle, over the misses served.

    .venv/bin/python bench/callgrind_miss.py [--base 58e98bc] [--result REV] [--seconds 10]
        [--concurrency 4] [--proxy] [--keep DIR] [--markdown PATH] [--json PATH]

`--proxy` counts the minimal aiohttp proxy (bench/reference_proxy.py) too, on its own fake
upstream, beside the two. `--keep DIR` keeps the dumps as DIR/<name>.busy.out and
DIR/<name>.idle.out, for `callgrind_annotate --inclusive=yes DIR/<name>.busy.out`.

Needs wrk and valgrind (`make valgrind`). Takes about three minutes (start-up under
valgrind is slow; much longer on a busy machine: --start-timeout). The counts do not
depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchkit import (
    REPO_DIR,
    WrkLoad,
    fake_stats,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    reference_proxy,
    service_url,
    services,
    write_outputs,
)
from callgrind import CallgrindServer, callgrind_available
from overhead import promptrelay_service

BASE, RESULT, PROXY = "base", "result", "proxy"
# --path: the wrk script and its arguments after the run tag
_SCRIPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "miss": ("unique_post.lua", ()),
    "stream": ("face_post.lua", ("messages", "1")),
    "hit": ("same_post.lua", ()),
}


@dataclass(frozen=True, slots=True)
class Count:
    name: str
    source: str
    busy: int  # instructions in the window of misses
    busy_seconds: float
    idle: int  # instructions in as long a window without requests
    idle_seconds: float
    misses: int

    @property
    def per_miss(self) -> float:
        background = self.idle / self.idle_seconds * self.busy_seconds
        return (self.busy - background) / self.misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="58e98bc", help="git revision to compare against")
    parser.add_argument("--result", help="git revision measured (default: this tree's src/)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk under callgrind")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--path", choices=sorted(_SCRIPTS), default="miss")
    parser.add_argument(
        "--fake-arg",
        action="append",
        default=[],
        help="passed to each fake upstream, e.g. --fake-arg=--stream-chunks=50",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=900.0, help="seconds for start-up under valgrind"
    )
    parser.add_argument("--proxy", action="store_true", help="also count the minimal proxy")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the callgrind dumps")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to a file")
    args = parser.parse_args()
    if not callgrind_available():
        sys.exit("needs valgrind and callgrind_control: make valgrind")
    wrk = WrkLoad("wrk")
    revisions = {BASE: args.base, RESULT: args.result}
    with tempfile.TemporaryDirectory(prefix="bench-base-") as tmp:
        checkouts = []
        try:
            sources = {}
            for name, revision in revisions.items():
                if revision is None:
                    sources[name] = REPO_DIR / "src"
                    continue
                checkout = Path(tmp) / name
                _git("worktree", "add", "--detach", str(checkout), revision)
                checkouts.append(checkout)
                sources[name] = checkout / "src"
            counts = _count_both(wrk, sources, Path(tmp), args)
        finally:
            for checkout in checkouts:
                _git("worktree", "remove", "--force", str(checkout))
    labels = {
        name: "this tree" if rev is None else _git("rev-parse", "--short", rev).strip()
        for name, rev in revisions.items()
    }
    write_outputs(*_report(counts, labels, args), args.markdown, args.json)


def _git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], cwd=REPO_DIR, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _count_both(
    wrk: WrkLoad, sources: dict[str, Path], workdir: Path, args: argparse.Namespace
) -> list[Count]:
    names = [*sources, PROXY] if args.proxy else list(sources)
    fakes = {name: fake_upstream() for name in names}
    for fake in fakes.values():
        fake.argv += args.fake_arg
    with services(list(fakes.values())):
        servers = {
            name: CallgrindServer(
                _server(name, src, service_url(fakes[name])), workdir, args.start_timeout
            )
            for name, src in sources.items()
        }
        if args.proxy:
            servers[PROXY] = CallgrindServer(
                reference_proxy(service_url(fakes[PROXY])), workdir, args.start_timeout
            )
        log("  callgrind: starting both servers under valgrind (~1 min)")
        try:
            with ThreadPoolExecutor(len(servers)) as pool:
                list(pool.map(CallgrindServer.__enter__, servers.values()))
                return list(
                    pool.map(
                        lambda name: _count(wrk, name, servers[name], fakes[name], args),
                        servers,
                    )
                )
        finally:
            for server in servers.values():
                server.__exit__(None, None, None)


def _server(name: str, src: Path, fake_url: str) -> Any:
    """`python -m promptrelay serve` importing promptrelay from `src` (checked first)."""
    service = promptrelay_service(fake_url, f"promptrelay {name}", TELEMETRY_INTERVAL="3600")
    service.env["PYTHONPATH"] = str(src)
    found = subprocess.run(
        [sys.executable, "-c", "import promptrelay; print(promptrelay.__file__)"],
        env=service.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(src.resolve()):
        raise RuntimeError(f"{name}: promptrelay imports from {found}, not from {src}")
    service.argv = [sys.executable, "-m", "promptrelay", "serve"]
    return service


def _count(
    wrk: WrkLoad, name: str, server: CallgrindServer, fake: Any, args: argparse.Namespace
) -> Count:
    url, fake_url = service_url(server.service), service_url(fake)
    script, script_args = _SCRIPTS[args.path]
    wrk.run(url, args.concurrency, 3, f"warmup-{uuid.uuid4().hex[:8]}", script, script_args)
    before = _upstream_calls(fake_url)
    loads = []

    def drive() -> None:
        tag = uuid.uuid4().hex[:8]
        loads.append(wrk.run(url, args.concurrency, args.seconds, tag, script, script_args))

    busy, busy_seconds = _window(server, drive)
    _keep(server, args.keep, name, "busy")
    misses = _upstream_calls(fake_url) - before
    if args.path == "hit":
        misses = loads[0].requests  # all hits: no upstream call to count them by
    time.sleep(1.0)
    idle, idle_seconds = _window(server, lambda: time.sleep(args.seconds))
    _keep(server, args.keep, name, "idle")
    source = str(server.service.env.get("PYTHONPATH", "bench/reference_proxy.py"))
    count = Count(name, source, busy, busy_seconds, idle, idle_seconds, misses)
    log(f"  callgrind {name}: {misses} {args.path}es, {count.per_miss:,.0f} instructions each")
    return count


def _keep(server: CallgrindServer, keep: Path | None, name: str, window: str) -> None:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(server.last_dump, keep / f"{name}.{window}.out")


def _upstream_calls(fake_url: str) -> int:
    return int(fake_stats(fake_url)["by_path"].get("/v1/messages", 0))


def _window(server: CallgrindServer, work: Callable[[], object]) -> tuple[int, float]:
    server.zero()
    started = time.monotonic()
    work()
    time.sleep(0.5)  # what is still in flight finishes inside the count
    return server.dump(), time.monotonic() - started


def _report(
    counts: list[Count], labels: dict[str, str], args: argparse.Namespace
) -> tuple[str, dict[str, Any]]:
    by_name = {count.name: count for count in counts}
    base, result = by_name[BASE], by_name[RESULT]
    ratio = result.per_miss / base.per_miss
    rows = [
        [
            f"{c.name} ({labels.get(c.name, 'bench/reference_proxy.py')})",
            f"{c.misses:,}",
            f"{c.per_miss:,.0f}",
            f"{c.per_miss / base.per_miss:.4f}",
        ]
        for c in counts
    ]
    text = "\n".join(
        [
            f"# Instructions per request, path {args.path} (callgrind): base revision vs this tree",
            "",
            *(f"- {line}" for line in machine_lines(sys.argv)),
            f"- both servers under callgrind at once, each with its own fake upstream; "
            f"wrk c={args.concurrency} for {args.seconds:g} s of "
            f"bench/{_SCRIPTS[args.path][0]}; idle instructions over as long a window subtracted"
            + (f"; fake upstream {' '.join(args.fake_arg)}" if args.fake_arg else ""),
            "",
            markdown_table(["promptrelay", "requests", "instructions / request", "÷ base"], rows),
            "",
            f"Result ÷ base: **{ratio:.4f}** ({(ratio - 1) * 100:+.2f}%).",
        ]
    )
    data = {
        "machine": machine_lines(sys.argv),
        "revisions": labels,
        "ratio": ratio,
        "counts": [{**asdict(c), "per_miss": c.per_miss} for c in counts],
    }
    return text, data


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
