"""Where a JSON miss's Python work goes, by feature: calls and bytecodes per miss, counted.

One process: promptrelay's app (or the minimal proxy, bench/reference_proxy.py) on its
own uvicorn protocol, fed keep-alive requests from an in-memory transport (no client
socket; the upstream is a real fake upstream over real HTTP). Each request has a unique
prompt, so each is a miss: an upstream call and a store. Over `--requests` misses a
trace hook counts, per feature, the Python calls made into that feature's modules, the
C calls its code makes, and the bytecodes it executes (`f_trace_opcodes`): counts that
the machine's load cannot move. A feature is a group of modules (`_FEATURES`).

With `--instructions`, each target runs untraced under callgrind twice, with 0 and with
`--requests` misses after the same warm-up, and the difference over the misses is the
user-space instructions of one miss, start-up and imports subtracted; with `--base REV`
promptrelay at that revision is counted too (a checkout in a temporary directory, by
PYTHONPATH); `--keep DIR` keeps the dumps (DIR/<target>.<misses>.out) for
`callgrind_annotate --inclusive=yes`. One miss at a time, so no batching under load moves
the count; timers and polls still come with the wall time a window takes, so the
targets run side by side (main's source: 1,063,009-1,063,878 per miss in three runs at
load averages 5-7, 1,095,813 in one beside a test run, its target alone).

With `--in-flight N` it counts instead what N misses hold while they wait for the
upstream (the fake answers after `--latency-ms`): the objects the collector tracks, per
request in flight, by type. Those are what every young collection at 1,024 concurrent
has to visit and what ends up in the older generations.

    .venv/bin/python bench/miss_calls.py [--requests 200] [--target promptrelay|proxy|both]
        [--functions N] [--in-flight N [--latency-ms 3000]]
        [--instructions [--base REV] [--keep DIR]]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
import uvloop
from uvicorn.lifespan.on import LifespanOn

from benchkit import API_KEY, REPO_DIR, fake_upstream, service_url, services
from protocol_cost import MemoryTransport

# (feature, path fragment): the first fragment in a frame's file name decides
_FEATURES = [
    ("server: uvicorn + GatewayProtocol", "/uvicorn/"),
    ("server: uvicorn + GatewayProtocol", "promptrelay/server/"),
    ("route, body read, face (api/)", "promptrelay/api/"),
    ("body parse + validation", "promptrelay/core/request.py"),
    ("pipeline prepare, providers", "promptrelay/core/pipeline.py"),
    ("pipeline prepare, providers", "promptrelay/core/providers.py"),
    ("pipeline prepare, providers", "promptrelay/core/cache_control.py"),
    ("pipeline prepare, providers", "promptrelay/core/auth.py"),
    ("gateway (key memo, store, headers)", "promptrelay/core/gateway.py"),
    ("cache key", "promptrelay/cache/keys.py"),
    ("cache tiers (lookup, store)", "promptrelay/cache/"),
    ("coalescer", "promptrelay/core/coalesce.py"),
    ("retry loop, resilient client", "promptrelay/core/resilient.py"),
    ("retry loop, resilient client", "promptrelay/resilience/retry.py"),
    ("breaker", "promptrelay/resilience/breaker.py"),
    ("breaker", "promptrelay/resilience/shared.py"),
    ("governor", "promptrelay/resilience/"),
    ("events + telemetry", "promptrelay/core/events.py"),
    ("events + telemetry", "promptrelay/telemetry/"),
    ("cache store (entry, meta), upstream headers", "promptrelay/core/stored.py"),
    ("quotas, prompt cache", "promptrelay/core/"),
    ("upstream client (ours)", "promptrelay/upstream/"),
    ("promptrelay, other", "promptrelay/"),
    ("proxy app", "bench/reference_proxy.py"),
    ("aiohttp, multidict, yarl", "/aiohttp/"),
    ("aiohttp, multidict, yarl", "/multidict/"),
    ("aiohttp, multidict, yarl", "/yarl/"),
    ("asyncio", "/asyncio/"),
]
_SKIP = ("miss_calls.py", "protocol_cost.py")  # the harness itself
_Target = Callable[[str], tuple[Any, Callable[..., Any]]]  # fake upstream URL -> app, protocol


def _feature(filename: str, cache: dict[str, str]) -> str:
    found = cache.get(filename)
    if found is None:
        found = next((name for name, part in _FEATURES if part in filename), "other Python")
        cache[filename] = found
    return found


def _request(n: int, tag: str) -> bytes:
    body = (
        b'{"model":"claude-sonnet-4-6","max_tokens":64,"messages":'
        b'[{"role":"user","content":"miss %s %d"}]}' % (tag.encode(), n)
    )
    return (
        b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"x-api-key: %s\r\nanthropic-version: 2023-06-01\r\n"
        b"content-length: %d\r\n\r\n" % (API_KEY.encode(), len(body)) + body
    )


class Counts:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.c_calls: Counter[str] = Counter()
        self.opcodes: Counter[str] = Counter()
        self.functions: Counter[tuple[str, str]] = Counter()  # (feature, file:function)
        self._files: dict[str, str] = {}

    def trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        name = frame.f_code.co_filename
        if name.endswith(_SKIP):
            return None
        feature = _feature(name, self._files)
        if event == "call":
            self.calls[feature] += 1
            frame.f_trace_opcodes = True
        elif event == "opcode":
            self.opcodes[feature] += 1
            code = frame.f_code
            self.functions[feature, f"{name.rpartition('/')[2]}:{code.co_qualname}"] += 1
        return self.trace

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            name = frame.f_code.co_filename
            if not name.endswith(_SKIP):
                self.c_calls[_feature(name, self._files)] += 1


async def _drive(
    app: Any, protocol_factory: Callable[..., Any], requests: int, traced: bool = True
) -> Counts:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    try:
        protocol, transport = _connect(config, protocol_factory)
        tag = uuid.uuid4().hex[:8]
        await _misses(protocol, transport, 50, f"warm-{tag}")
        counts = Counts()
        if traced:
            sys.settrace(counts.trace)
            sys.setprofile(counts.profile)
        try:
            await _misses(protocol, transport, requests, tag)
        finally:
            sys.settrace(None)
            sys.setprofile(None)
        protocol.connection_lost(None)
        return counts
    finally:
        await lifespan.shutdown()


def _connect(
    config: uvicorn.Config, protocol_factory: Callable[..., Any]
) -> tuple[Any, _Transport]:
    from uvicorn.server import ServerState

    protocol = protocol_factory(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def _hold(app: Any, protocol_factory: Callable[..., Any], requests: int) -> Counter[str]:
    """Tracked objects per request while `requests` misses wait for the upstream."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    try:
        tag = uuid.uuid4().hex[:8]
        await _parallel(config, protocol_factory, 20, f"warm-{tag}", settle=None)
        return await _parallel(config, protocol_factory, requests, tag, settle=1.0)
    finally:
        await lifespan.shutdown()


async def _parallel(
    config: uvicorn.Config,
    protocol_factory: Callable[..., Any],
    requests: int,
    tag: str,
    settle: float | None,
) -> Counter[str]:
    loop = asyncio.get_running_loop()
    gc.collect()
    before = Counter(type(o).__name__ for o in gc.get_objects())
    pending = []
    for n in range(requests):
        protocol, transport = _connect(config, protocol_factory)
        transport.answered = loop.create_future()
        pending.append((protocol, transport))
        protocol.data_received(_request(n, tag))
    held: Counter[str] = Counter()
    if settle is not None:
        await asyncio.sleep(settle)  # every request is out, waiting for its answer
        gc.collect()
        held = Counter(type(o).__name__ for o in gc.get_objects())
        held.subtract(before)
        assert not any(t.answered is not None and t.answered.done() for _, t in pending)
    for protocol, transport in pending:
        assert transport.answered is not None
        await transport.answered
        protocol.connection_lost(None)
    return held


class _Transport(MemoryTransport):
    """Wakes the harness at each answer, with no Python of asyncio's in between."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: asyncio.Future[None] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(None)


async def _misses(protocol: Any, transport: _Transport, requests: int, tag: str) -> None:
    loop = asyncio.get_running_loop()
    for n in range(requests):
        transport.answered = loop.create_future()
        protocol.data_received(_request(n, tag))
        await transport.answered
        assert protocol.cycle.response_complete


def _promptrelay(fake_url: str) -> tuple[Any, Callable[..., Any]]:
    os.environ.update(
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=fake_url,
        REDIS_ENABLED="false",
        LOG_LEVEL="warning",
        TELEMETRY_INTERVAL="3600",
    )
    from promptrelay.app import build_app
    from promptrelay.server import GatewayProtocol, ServerLimits
    from promptrelay.settings import load_settings

    settings = load_settings()
    factory = functools.partial(GatewayProtocol, limits=ServerLimits.from_settings(settings))
    return build_app(settings, own_process=True), factory


def _proxy(fake_url: str) -> tuple[Any, Callable[..., Any]]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from reference_proxy import make_app

    return make_app(fake_url, "aiohttp"), HttpToolsProtocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--target", choices=["promptrelay", "proxy", "both"], default="both")
    parser.add_argument(
        "--functions", type=int, default=0, help="also list the N costliest functions"
    )
    parser.add_argument("--in-flight", type=int, help="count the objects N misses hold")
    parser.add_argument("--instructions", action="store_true", help="count under callgrind")
    parser.add_argument("--base", help="with --instructions: also promptrelay at this revision")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="with --instructions: the dumps")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # child: TARGET@FAKE_URL, untraced
    parser.add_argument("--latency-ms", type=float, default=3000.0, help="with --in-flight")
    args = parser.parse_args()
    targets: dict[str, _Target] = {"promptrelay": _promptrelay, "proxy": _proxy}
    chosen = list(targets) if args.target == "both" else [args.target]
    if args.run:
        name, _, fake_url = args.run.partition("@")
        app, factory = targets[name](fake_url)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_drive(app, factory, args.requests, traced=False))
        return
    if args.in_flight:
        _objects(targets, chosen, args)
        return
    if args.instructions:
        _instructions(chosen, args)
        return
    fake = fake_upstream()
    results: dict[str, Counts] = {}
    with services([fake]):
        for name in chosen:
            app, factory = targets[name](service_url(fake))
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results[name] = runner.run(_drive(app, factory, args.requests))
    n = args.requests
    features = sorted(
        {f for c in results.values() for f in c.opcodes},
        key=lambda f: -max(c.opcodes[f] for c in results.values()),
    )
    header = " | ".join(f"{t} calls / C calls / bytecodes" for t in results)
    print(f"| feature | {header} |")
    print("|---|" + "---|" * len(results))
    for feature in features:
        cells = " | ".join(
            f"{c.calls[feature] / n:.0f} / {c.c_calls[feature] / n:.0f} / "
            f"{c.opcodes[feature] / n:,.0f}"
            for c in results.values()
        )
        print(f"| {feature} | {cells} |")
    totals = " | ".join(
        f"{sum(c.calls.values()) / n:.0f} / {sum(c.c_calls.values()) / n:.0f} / "
        f"{sum(c.opcodes.values()) / n:,.0f}"
        for c in results.values()
    )
    print(f"| total | {totals} |")
    for target, counts in results.items() if args.functions else ():
        print(f"\n{target}: bytecodes per miss by function (feature: file:function)")
        for (feature, function), count in counts.functions.most_common(args.functions):
            print(f"  {count / n:7,.0f}  {feature}: {function}")


def _instructions(chosen: list[str], args: argparse.Namespace) -> None:
    runs: list[tuple[str, str, Path | None]] = [(name, name, None) for name in chosen]
    with tempfile.TemporaryDirectory(prefix="bench-miss-") as tmp:
        checkout = Path(tmp) / "base"
        git = ["git", "-C", str(REPO_DIR), "worktree"]
        if args.base:
            subprocess.run([*git, "add", "--detach", str(checkout), args.base], check=True)
            runs.insert(0, (f"promptrelay {args.base}", "promptrelay", checkout / "src"))
        fake = fake_upstream()
        try:
            with services([fake]), ThreadPoolExecutor(len(runs)) as pool:
                fake_url = service_url(fake)
                # the targets side by side, the 0-miss runs first: each window under
                # the same load (timers and polls come with the wall time it takes)
                jobs = {
                    (label, k): pool.submit(_collected, label, name, fake_url, k, src, args)
                    for k in (0, args.requests)
                    for label, name, src in runs
                }
                for label, _name, _src in runs:
                    idle, busy = jobs[label, 0], jobs[label, args.requests]
                    per_miss = (busy.result() - idle.result()) / args.requests
                    print(
                        f"{label}: {per_miss:,.0f} instructions per miss ({args.requests} misses)"
                    )
        finally:
            if args.base:
                subprocess.run([*git, "remove", "--force", str(checkout)], check=True)


def _collected(
    label: str, name: str, fake_url: str, requests: int, src: Path | None, args: argparse.Namespace
) -> int:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    keep = args.keep or Path(tempfile.gettempdir())
    keep.mkdir(parents=True, exist_ok=True)
    out = keep / f"{label.replace(' ', '-')}.{requests}.out"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    argv += [__file__, "--run", f"{name}@{fake_url}", "--requests", str(requests)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    if args.keep is None:
        out.unlink(missing_ok=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{done.stderr}")
    return int(found.group(1))


def _objects(
    targets: dict[str, _Target],
    chosen: list[str],
    args: argparse.Namespace,
) -> None:
    fake = fake_upstream("--latency-ms", str(args.latency_ms))
    with services([fake]):
        for name in chosen:
            app, factory = targets[name](service_url(fake))
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                held = runner.run(_hold(app, factory, args.in_flight))
            total = sum(held.values()) / args.in_flight
            print(f"{name}: {total:.1f} tracked objects per miss in flight")
            for kind, count in held.most_common(25):
                if count / args.in_flight >= 0.5:
                    print(f"  {count / args.in_flight:6.1f}  {kind}")


if __name__ == "__main__":
    main()
