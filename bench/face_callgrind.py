"""Instructions per request of each face, counted by callgrind: the noise-proof half of
bench/openai_face.py.

One `promptrelay serve` runs under callgrind (bench/callgrind.py) with its own fake
upstream. For each (face, json|stream) cell, after a warm-up of that cell: zero the
counters, drive wrk with bench/face_post.lua for a window, dump. A request's cost is the
window's instructions less what the same server executes in as long a time idle, over
the requests served (the fake's upstream calls: every request is a miss, so one call
each). Same binary, same inputs: the same count whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchkit import WrkLoad, fake_reset, fake_stats, fake_upstream, log, service_url, services
from callgrind import CallgrindServer
from overhead import promptrelay_service

__all__ = ["instructions_per_request"]


def instructions_per_request(
    wrk: WrkLoad, faces: tuple[str, ...], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """{"face/json": {"instructions": per request, "requests": n}, ...}"""
    fake = fake_upstream()
    cells: dict[str, dict[str, float]] = {}
    with services([fake]), tempfile.TemporaryDirectory(prefix="bench-face-cg-") as tmp:
        fake_url = service_url(fake)
        relay = promptrelay_service(fake_url, "promptrelay callgrind", TELEMETRY_INTERVAL="3600")
        log("callgrind: starting promptrelay under valgrind (a minute or more)")
        with CallgrindServer(relay, Path(tmp), args.start_timeout) as server:
            time.sleep(1.0)
            idle, idle_seconds = _window(server, lambda: time.sleep(args.callgrind_seconds))
            for kind in ("json", "stream"):
                for face in faces:
                    busy, seconds, requests = _cell(wrk, server, fake_url, face, kind, args)
                    background = idle / idle_seconds * seconds
                    per_request = (busy - background) / max(requests, 1)
                    log(f"callgrind {face}/{kind}: {requests} requests, {per_request:,.0f} instr")
                    cells[f"{face}/{kind}"] = {"instructions": per_request, "requests": requests}
    return cells


def _cell(
    wrk: WrkLoad,
    server: CallgrindServer,
    fake_url: str,
    face: str,
    kind: str,
    args: argparse.Namespace,
) -> tuple[int, float, int]:
    """(instructions, seconds, requests) of one face's window, after its warm-up."""
    url, script = service_url(server.service), [face, "1" if kind == "stream" else "0"]
    concurrency = args.callgrind_concurrency
    wrk.run(url, concurrency, 3, f"cgwarm-{uuid.uuid4().hex[:8]}", "face_post.lua", script)
    fake_reset(fake_url)
    tag = uuid.uuid4().hex[:8]
    busy, seconds = _window(
        server,
        lambda: wrk.run(url, concurrency, args.callgrind_seconds, tag, "face_post.lua", script),
    )
    return busy, seconds, int(fake_stats(fake_url)["requests"])


def _window(server: CallgrindServer, work: Callable[[], object]) -> tuple[int, float]:
    server.zero()
    started = time.monotonic()
    work()
    time.sleep(0.5)  # what is still in flight finishes inside the count
    return server.dump(), time.monotonic() - started
