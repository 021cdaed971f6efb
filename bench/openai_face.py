"""What the OpenAI faces cost over /v1/messages for the same Claude call, one run.

Starts the fake Anthropic API (answering instantly) and `promptrelay serve`, then drives
wrk (bench/face_post.lua) against POST /v1/messages, POST /v1/chat/completions and POST
/v1/responses with the same Claude call (model, max_tokens, a different prompt per
request: every request a cache miss), JSON and streamed. The figure that matters is
promptrelay's CPU per request on an OpenAI face divided by the same on /v1/messages
(target: at most 1.15), measured two ways:

- wrk: `--rounds` rounds of one timed window per face, the face order rotated each round
  so drift on the shared machine hits every face alike; the ratio is taken per round and
  its median over the rounds is the figure (robust to a neighbour's burst in one window).
- callgrind (bench/face_callgrind.py, skipped with --no-callgrind or without valgrind):
  user-space instructions per request of each face on one server under valgrind, which
  machine load cannot move (system calls are not counted there; wrk's CPU counts them).

The verdict holds when both ratios are at most the target.

    .venv/bin/python bench/openai_face.py [--duration 3] [--rounds 10] [--no-callgrind]
        [--json P] [--markdown P]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from typing import Any

from benchkit import (
    WrkLoad,
    fake_reset,
    fake_stats,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    service_url,
    services,
    write_outputs,
)
from callgrind import callgrind_available
from face_callgrind import instructions_per_request
from overhead import promptrelay_service

TARGET = 1.15
BASE = "messages"
FACES = (BASE, "chat", "responses")
ROUTES = {"messages": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}
KINDS = ("json", "stream")


def _measure(
    wrk: WrkLoad, relay: Any, fake: Any, face: str, stream: bool, args: argparse.Namespace
) -> tuple[float, int, int]:
    """(CPU seconds, answered requests, upstream calls) of one timed window."""
    url, flag, tag = service_url(relay), "1" if stream else "0", uuid.uuid4().hex[:8]
    wrk.run(url, args.concurrency, args.warmup, f"warm-{tag}", "face_post.lua", [face, flag])
    fake_reset(service_url(fake))
    before = relay.cpu_seconds()
    result = wrk.run(url, args.concurrency, args.duration, tag, "face_post.lua", [face, flag])
    cpu = relay.cpu_seconds() - before
    if result.errors:
        raise RuntimeError(f"{face} stream={stream}: {result.errors} failed requests")
    return cpu, result.requests, int(fake_stats(service_url(fake))["requests"])


def _round(
    wrk: WrkLoad, relay: Any, fake: Any, number: int, cells: dict[str, Any], args: Any
) -> None:
    shift = number % len(FACES)
    order = FACES[shift:] + FACES[:shift]
    for kind in KINDS:
        per_request = {}
        for face in order:
            log(f"round {number + 1}: {face}, {kind}")
            cpu, answered, calls = _measure(wrk, relay, fake, face, kind == "stream", args)
            cell = cells.setdefault(
                f"{face}/{kind}", {"cpu_s": 0.0, "requests": 0, "upstream_calls": 0}
            )
            cell["cpu_s"] += cpu
            cell["requests"] += answered
            cell["upstream_calls"] += calls
            per_request[face] = cpu / max(answered, 1)
        for face in FACES[1:]:
            ratios = cells.setdefault(f"ratios/{face}/{kind}", {"values": []})["values"]
            ratios.append(per_request[face] / per_request[BASE])


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = WrkLoad("wrk")
    fake = fake_upstream()
    cells: dict[str, Any] = {}
    with services([fake]):
        relay = promptrelay_service(service_url(fake))
        with services([relay]):
            for number in range(args.rounds):
                _round(wrk, relay, fake, number, cells, args)
    for cell in cells.values():
        if "cpu_s" in cell:
            cell["cpu_ms_per_request"] = cell["cpu_s"] * 1e3 / max(cell["requests"], 1)
        else:
            cell["median"] = statistics.median(cell["values"])
    if args.callgrind:
        counts = instructions_per_request(wrk, FACES, args)
        for kind in KINDS:
            base = counts[f"{BASE}/{kind}"]["instructions"]
            for face in FACES:
                counts[f"{face}/{kind}"]["ratio"] = counts[f"{face}/{kind}"]["instructions"] / base
        cells["callgrind"] = counts
    return cells


def _verdict(ratios: list[float]) -> str:
    worst = max(ratios)
    return "met" if worst <= TARGET else f"MISSED ({worst:.3f}x > {TARGET:.2f}x)"


def _lines(data: dict[str, Any]) -> list[str]:
    counts = data.get("callgrind")
    lines = []
    for face in FACES[1:]:
        for kind in KINDS:
            ratios = data[f"ratios/{face}/{kind}"]
            each = ", ".join(f"{value:.2f}" for value in ratios["values"])
            overall = (
                data[f"{face}/{kind}"]["cpu_ms_per_request"]
                / data[f"{BASE}/{kind}"]["cpu_ms_per_request"]
            )
            judged = [ratios["median"]]
            text = (
                f"- {ROUTES[face]} {kind}: CPU per request **{ratios['median']:.2f}x** "
                f"/v1/messages (median of the rounds: {each}; over all windows {overall:.2f}x)"
            )
            if counts is not None:
                ratio = counts[f"{face}/{kind}"]["ratio"]
                judged.append(ratio)
                text += f"; instructions per request **{ratio:.3f}x**"
            lines.append(f"{text}: {_verdict(judged)}")
    return lines


def _callgrind_table(counts: dict[str, Any]) -> list[str]:
    rows = [
        [
            ROUTES[face],
            kind,
            f"{counts[f'{face}/{kind}']['requests']:,}",
            f"{counts[f'{face}/{kind}']['instructions']:,.0f}",
            f"{counts[f'{face}/{kind}']['ratio']:.3f}",
        ]
        for kind in KINDS
        for face in FACES
    ]
    header = ["face", "answer", "requests", "instructions / request", "÷ /v1/messages"]
    title = "Instructions per request (callgrind, one server):"
    return ["", title, "", markdown_table(header, rows)]


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        [
            ROUTES[face],
            kind,
            f"{data[f'{face}/{kind}']['requests']:,}",
            f"{data[f'{face}/{kind}']['upstream_calls']:,}",
            f"{data[f'{face}/{kind}']['cpu_ms_per_request']:.3f}",
        ]
        for kind in KINDS
        for face in FACES
    ]
    header = ["face", "answer", "requests", "upstream calls", "CPU ms/req"]
    counts = data.get("callgrind")
    extra = [] if counts is None else _callgrind_table(counts)
    setup = (
        f"- callgrind: c={args.callgrind_concurrency}, {args.callgrind_seconds:g} s per face "
        "after a 3 s warm-up, idle instructions over as long a window subtracted"
    )
    return "\n".join(
        [
            "# OpenAI faces: CPU per request vs /v1/messages (same Claude call, all misses)",
            "",
            *(f"- {line}" for line in machine_lines(sys.argv)),
            f"- wrk c={args.concurrency}, {args.duration:g} s per window after "
            f"{args.warmup:g} s warm-up, {args.rounds} rounds, the face order rotated each round",
            *([setup] if counts is not None else []),
            "",
            markdown_table(header, rows),
            *extra,
            "",
            f"Target: at most {TARGET:.2f}x, by the wrk median and by instructions.",
            "",
            *_lines(data),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-callgrind", dest="callgrind", action="store_false")
    parser.add_argument("--callgrind-seconds", type=float, default=10.0)
    parser.add_argument("--callgrind-concurrency", type=int, default=1)
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    if args.callgrind and not callgrind_available():
        log("no valgrind: instruction counts skipped (make valgrind)")
        args.callgrind = False
    data = run(args)
    write_outputs(report(data, args), data, args.markdown, args.json)


if __name__ == "__main__":
    main()
