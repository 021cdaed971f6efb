"""What the OpenAI face costs over /v1/messages for the same Claude call, one run.

Starts the fake Anthropic API (answering instantly) and `promptrelay serve`, then drives
wrk against POST /v1/messages and POST /v1/chat/completions with the same bodies (model,
max_tokens, a different prompt per request: every request a cache miss), JSON and
streamed, alternating faces for `--rounds` rounds so drift on the shared machine hits
both alike. The figure that matters is promptrelay's CPU per request on the chat face
divided by the same on the messages face, per round, and its median over the rounds
(robust to a neighbour's burst of load in one window; target: at most 1.15):

    .venv/bin/python bench/openai_face.py [--duration 2] [--rounds 6] [--json P] [--markdown P]
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
from overhead import promptrelay_service

TARGET = 1.15
FACES = ("messages", "chat")


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = WrkLoad("wrk")
    fake = fake_upstream()
    cells: dict[str, dict[str, Any]] = {}
    with services([fake]):
        relay = promptrelay_service(service_url(fake))
        with services([relay]):
            for round_number in range(args.rounds):
                for stream in (False, True):
                    kind = "stream" if stream else "json"
                    per_request = {}
                    for face in FACES if round_number % 2 == 0 else FACES[::-1]:
                        log(f"round {round_number + 1}: {face}, {kind}")
                        cpu, answered, calls = _measure(wrk, relay, fake, face, stream, args)
                        cell = cells.setdefault(
                            f"{face}/{kind}", {"cpu_s": 0.0, "requests": 0, "upstream_calls": 0}
                        )
                        cell["cpu_s"] += cpu
                        cell["requests"] += answered
                        cell["upstream_calls"] += calls
                        per_request[face] = cpu / max(answered, 1)
                    ratios = cells.setdefault(f"ratios/{kind}", {"values": []})["values"]
                    ratios.append(per_request["chat"] / per_request["messages"])
    for cell in cells.values():
        if "cpu_s" in cell:
            cell["cpu_ms_per_request"] = cell["cpu_s"] * 1e3 / max(cell["requests"], 1)
        else:
            cell["median"] = statistics.median(cell["values"])
    return cells


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    rows, lines = [], []
    for kind in ("json", "stream"):
        base = data[f"messages/{kind}"]
        chat = data[f"chat/{kind}"]
        ratios = data[f"ratios/{kind}"]
        ratio = ratios["median"]
        verdict = "met" if ratio <= TARGET else f"MISSED ({ratio:.2f}x > {TARGET:.2f}x)"
        for face, cell in (("/v1/messages", base), ("/v1/chat/completions", chat)):
            rows.append(
                [
                    face,
                    kind,
                    f"{cell['requests']:,}",
                    f"{cell['upstream_calls']:,}",
                    f"{cell['cpu_ms_per_request']:.3f}",
                ]
            )
        each = ", ".join(f"{value:.2f}" for value in ratios["values"])
        lines.append(
            f"- {kind}: chat CPU per request {ratio:.2f}x /v1/messages, median of the rounds "
            f"({each}) ({verdict}); over all windows "
            f"{chat['cpu_ms_per_request'] / base['cpu_ms_per_request']:.2f}x"
        )
    header = ["face", "answer", "requests", "upstream calls", "CPU ms/req"]
    return "\n".join(
        [
            "# OpenAI face CPU per request vs /v1/messages (same Claude call, all misses)",
            "",
            *(f"- {line}" for line in machine_lines(sys.argv)),
            f"- wrk c={args.concurrency}, {args.duration:g} s per window after "
            f"{args.warmup:g} s warm-up, {args.rounds} rounds alternating the faces",
            "",
            markdown_table(header, rows),
            "",
            *lines,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args()
    data = run(args)
    write_outputs(report(data, args), data, args.markdown, args.json)


if __name__ == "__main__":
    main()
