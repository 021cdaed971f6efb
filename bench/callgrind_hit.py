"""Instructions per cache hit: promptrelay against the raw ASGI floor, under callgrind.

The floor is bench/raw_asgi.py answering the same stored body under promptrelay's own
uvicorn options (the hits stage of bench/suite.py), so the difference is what a hit
does beyond reading a request and writing a stored answer. Both servers run under
callgrind one after the other (bench/callgrind.py); wrk sends one prompt
(bench/pool_post.lua `1 0`); the idle instructions of as long a window are subtracted.
With `--base REV` a third server imports promptrelay from that revision (a checkout in
a temporary directory) for a before/after in the same invocation; `--result REV` counts
that revision in place of this tree's src/. `--keep DIR` keeps
the dumps, for `callgrind_annotate --inclusive=yes DIR/<name>.out`.

    .venv/bin/python bench/callgrind_hit.py [--seconds 10] [--concurrency 16]
        [--base REV] [--result REV] [--keep DIR] [--markdown PATH] [--json PATH]

Needs wrk and valgrind (`make valgrind`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchkit import (
    REPO_DIR,
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
from callgrind_miss import Count, _git, _server, _window
from suite_scale import _stored_answer, raw_asgi

_SCRIPT, _ARGS = "pool_post.lua", ("1", "0")
RAW = "raw ASGI"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk under callgrind")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--base", help="also count promptrelay at this git revision")
    parser.add_argument("--result", help="count this revision, not this tree's src/")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw ASGI floor")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the callgrind dumps")
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--markdown", metavar="PATH")
    args = parser.parse_args()
    if not callgrind_available():
        sys.exit("needs valgrind and callgrind_control: make valgrind")
    with tempfile.TemporaryDirectory(prefix="bench-hit-") as tmp:
        revisions = {"base": args.base, "result": args.result}
        sources: dict[str, Path] = {}
        checkouts = []
        try:
            for side, revision in revisions.items():
                if revision is None:
                    if side == "result":
                        sources["this tree"] = REPO_DIR / "src"
                    continue
                checkout = Path(tmp) / side
                _git("worktree", "add", "--detach", str(checkout), revision)
                checkouts.append(checkout)
                sources[f"{side} {revision}"] = checkout / "src"
            counts = _count_all(WrkLoad("wrk"), sources, Path(tmp), args)
        finally:
            for checkout in checkouts:
                _git("worktree", "remove", "--force", str(checkout))
    write_outputs(*_report(counts, args), args.markdown, args.json)


def _count_all(
    wrk: WrkLoad, sources: dict[str, Path], workdir: Path, args: argparse.Namespace
) -> list[Count]:
    fake = fake_upstream()
    counts: list[Count] = []
    body_file = workdir / "hit.json"
    with services([fake]):
        for name, src in sources.items():
            relay = _server(name, src, service_url(fake))
            counts.append(_count(wrk, name, relay, workdir, args, body_file))
        if not args.no_raw:
            raw = raw_asgi(body_file)
            raw.env.update(relay.env)
            counts.append(_count(wrk, RAW, raw, workdir, args, None))
    return counts


def _count(
    wrk: WrkLoad,
    name: str,
    service: Service,
    workdir: Path,
    args: argparse.Namespace,
    body_file: Path | None,
) -> Count:
    with CallgrindServer(service, workdir, args.start_timeout) as server:
        url = service_url(server.service)
        tag = f"hit-{uuid.uuid4().hex[:8]}"
        wrk.run(url, args.concurrency, 3, tag, _SCRIPT, _ARGS)
        if body_file is not None and not body_file.exists():
            body_file.write_bytes(_stored_answer(url, tag))
        loads = []

        def drive() -> None:
            loads.append(wrk.run(url, args.concurrency, args.seconds, tag, _SCRIPT, _ARGS))

        busy, busy_seconds = _window(server, drive)
        _keep(server, args.keep, name, "busy")
        time.sleep(1.0)
        idle, idle_seconds = _window(server, lambda: time.sleep(args.seconds))
        _keep(server, args.keep, name, "idle")
    count = Count(name, name, busy, busy_seconds, idle, idle_seconds, loads[0].requests)
    log(f"  callgrind {name}: {count.misses} hits, {count.per_miss:,.0f} instructions each")
    return count


def _keep(server: CallgrindServer, keep: Path | None, name: str, window: str) -> None:
    if keep is None:
        return
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(server.last_dump, keep / f"{name.replace(' ', '-')}.{window}.out")


def _report(counts: list[Count], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    raw = next((c for c in counts if c.name == RAW), counts[0])
    rows = [
        [
            c.name,
            f"{c.misses:,}",
            f"{c.per_miss:,.0f}",
            f"{c.per_miss - raw.per_miss:,.0f}",
            f"{c.per_miss / raw.per_miss:.2f}",
        ]
        for c in counts
    ]
    text = "\n".join(
        [
            "# Instructions per cache hit (callgrind): promptrelay against the raw ASGI floor",
            "",
            *(f"- {line}" for line in machine_lines(sys.argv)),
            f"- one server at a time under callgrind; wrk c={args.concurrency} for "
            f"{args.seconds:g} s of bench/{_SCRIPT} `1 0`; idle instructions over as long "
            "a window subtracted",
            "",
            markdown_table(
                ["server", "hits", "instructions / hit", f"beyond {raw.name}", f"÷ {raw.name}"],
                rows,
            ),
        ]
    )
    data = {
        "machine": machine_lines(sys.argv),
        "counts": [{**asdict(c), "per_hit": c.per_miss} for c in counts],
    }
    return text, data


if __name__ == "__main__":
    main()
