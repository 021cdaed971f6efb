"""`make soak`: ten minutes of mixed load on one promptrelay, its RSS sampled throughout.

Starts the fake upstream (answering instantly) and `promptrelay serve` (one worker,
memory tier only), then runs wrk for the whole soak with bench/pool_post.lua: 70% of
requests draw from a pool of 1,000 prompts (hits once cached), 30% are new prompts
(misses that keep filling the cache), and 10% of all ask for a stream. Every few seconds
it samples the server's RSS (psutil) and the memory tier's size (GET /api/health).

The figure that matters is growth once the cache is full: from the first sample where
the memory tier holds >= 99% of MEMORY_CACHE_MAX_BYTES to the last sample, RSS should
grow < 5% (the cache evicts; anything else that grows is a leak). Not part of
`make bench` or CI: it takes the whole machine for the duration.

    .venv/bin/python bench/soak.py                      # 10 minutes, default cache size
    .venv/bin/python bench/soak.py --minutes 0.5 --cache-mib 4 --out /tmp/soak   # check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from benchkit import (
    BENCH_DIR,
    WrkLoad,
    fake_upstream,
    log,
    machine_lines,
    markdown_table,
    pick_load_generator,
    service_url,
    services,
)
from overhead import promptrelay_service
from promptrelay.settings import Settings
from suite_report import at_most
from suite_stages import MIB, health, one_request, rss_mib

# "Full": at its bound (the LRU keeps it within one entry of it). At 90% the tier still
# has 10% of its bound to grow, which a growth figure must not count as a leak.
FULL_SHARE = 0.99


@dataclass(frozen=True)
class Sample:
    seconds: float
    rss_mib: float
    cache_mib: float
    cache_entries: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument(
        "--cache-mib",
        type=float,
        help="MEMORY_CACHE_MAX_BYTES in MiB (default: the server's default, 64)",
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results dir")
    return parser.parse_args()


def take_sample(pid: int, url: str, started: float) -> Sample:
    cache = health(url).get("cache", {})
    return Sample(
        seconds=time.monotonic() - started,
        rss_mib=rss_mib(pid),
        cache_mib=cache.get("bytes", 0) / MIB,
        cache_entries=int(cache.get("entries", 0)),
    )


def sample_until_done(
    wrk: subprocess.Popen[str], pid: int, url: str, interval: float, started: float
) -> list[Sample]:
    samples = []
    while wrk.poll() is None:
        samples.append(take_sample(pid, url, started))
        time.sleep(interval)
    return samples


def main() -> None:
    args = parse_args()
    load = pick_load_generator("wrk")
    assert isinstance(load, WrkLoad)
    default_max = int(Settings.model_fields["memory_cache_max_bytes"].default)
    cache_max = int(args.cache_mib * MIB) if args.cache_mib else default_max
    fake = fake_upstream()
    relay = promptrelay_service(service_url(fake))
    relay.env["MEMORY_CACHE_MAX_BYTES"] = str(cache_max)
    seconds = max(1, round(args.minutes * 60))
    with services([fake, relay]):
        url = service_url(relay)
        one_request(url)
        idle = rss_mib(relay.pid)
        argv = load.command(
            url,
            args.concurrency,
            seconds,
            f"soak-{uuid.uuid4().hex[:8]}",
            script="pool_post.lua",
            script_args=("1000", "30", "10"),
        )
        log(f"soak: {seconds} s of mixed load, RSS sampled every {args.interval:g} s")
        started = time.monotonic()
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as wrk:
            samples = sample_until_done(wrk, relay.pid, url, args.interval, started)
            stdout, stderr = wrk.communicate()
        result = load.parse(wrk.returncode, stdout, stderr)
        samples.append(take_sample(relay.pid, url, started))
    last = samples[-1]
    full = next((s for s in samples if s.cache_mib >= FULL_SHARE * cache_max / MIB), None)
    header = machine_lines(sys.argv)
    lines = [
        "# promptrelay soak: RSS under mixed load",
        "",
        *(f"- {line}" for line in header),
        f"- {seconds} s of wrk c={args.concurrency}: 70% from 1,000 pooled prompts, 30% new, "
        f"10% streamed; MEMORY_CACHE_MAX_BYTES {cache_max / MIB:.0f} MiB; one worker",
        f"- wrk: {result.requests:,} answers, {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} "
        f"ms, p99 {result.p99_ms:.2f} ms, {result.errors} errors",
        f"- RSS: idle {idle:.1f} MiB, peak {max(s.rss_mib for s in samples):.1f} MiB, "
        f"end {last.rss_mib:.1f} MiB",
        "",
    ]
    data: dict[str, object] = {
        "machine": header,
        "seconds": seconds,
        "cache_max_bytes": cache_max,
        "idle_mib": idle,
        "wrk": asdict(result) | {"rps": result.rps},
        "samples": [asdict(s) for s in samples],
    }
    if full is None:
        lines.append(
            f"- The cache never reached {FULL_SHARE:.0%} of its bound: run longer or "
            "with a smaller --cache-mib to measure growth once full."
        )
        check = None
    else:
        growth = (last.rss_mib - full.rss_mib) / full.rss_mib * 100
        check = at_most("RSS growth once the cache is full < 5%", growth, 5.0, "%")
        lines.append(
            f"- Cache full (≥ {FULL_SHARE:.0%}) at {full.seconds:.0f} s with RSS "
            f"{full.rss_mib:.1f} MiB; {last.seconds - full.seconds:.0f} s later RSS "
            f"{last.rss_mib:.1f} MiB."
        )
        lines.append(f"- Target: {check.target}: {check.measured} — {check.verdict}")
        data["full_at_s"] = full.seconds
        data["growth_pct"] = growth
        data["check"] = asdict(check) | {"verdict": check.verdict}
    step = max(1, -(-len(samples) // 20))  # at most ~20 rows, always the last sample
    shown = samples[::step] + ([] if (len(samples) - 1) % step == 0 else [last])
    rows = [
        [f"{s.seconds:.0f}", f"{s.rss_mib:.1f}", f"{s.cache_mib:.1f}", f"{s.cache_entries:,}"]
        for s in shown
    ]
    lines += ["", markdown_table(["s", "RSS MiB", "cache MiB", "cache entries"], rows)]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if draw(samples, full, out / "soak.png"):
        lines += ["", "![RSS over the soak](soak.png)"]
    text = "\n".join(lines)
    (out / "soak.md").write_text(text + "\n")
    (out / "soak.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)
    log(f"wrote {out / 'soak.md'}, {out / 'soak.json'}")


def draw(samples: list[Sample], full: Sample | None, path: Path) -> bool:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        log("matplotlib is not installed (`pip install -e '.[bench]'`): no chart")
        return False
    figure, axis = plt.subplots(figsize=(8, 3.8))
    times = [s.seconds for s in samples]
    axis.plot(times, [s.rss_mib for s in samples], label="RSS MiB")
    axis.plot(times, [s.cache_mib for s in samples], label="memory cache MiB")
    if full is not None:
        axis.axvline(full.seconds, color="#c44e52", linestyle="--", linewidth=1)
        axis.annotate("cache full", (full.seconds, 0), xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("seconds")
    axis.set_ylabel("MiB")
    axis.set_title("promptrelay RSS under mixed load")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


if __name__ == "__main__":
    main()
