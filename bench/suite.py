"""The benchmark suite behind `make bench`: every stage of issue 7, one invocation.

    .venv/bin/python bench/suite.py            # full run, writes bench/results/suite.*
    .venv/bin/python bench/suite.py --quick    # short windows, writes bench/results/quick/
    .venv/bin/python bench/suite.py --stages overhead,burst

Stages (bench/suite_stages.py): overhead (direct vs minimal proxy vs promptrelay, misses,
c=1 and c=16, CPU per request), slowup (1,024 concurrent misses on a 200 ms upstream vs
the minimal proxy), streams (500 paced streams of 200 deltas 25 ms apart vs the minimal
proxy, CPU per event), hits (vs a raw ASGI callable answering the stored body; these
three in bench/suite_scale.py, sized by the options below), cache (hits vs misses, Zipf
hit rate), burst (100 identical concurrent misses), workers (1 vs 2 workers sharing
Redis, hits), memory (RSS idle and after 100k unique requests), telemetry (when
bench/telemetry.py exists) and dashboard. Each measures against a baseline started in
the same run and prints the targets of issues 7 and 17 next to the values (met, or missed
by how much). The soak is separate: `make soak`.
Writes suite.json, suite.md and one suite-<stage>.png per stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from benchkit import BENCH_DIR, WrkLoad, log, machine_lines, pick_load_generator
from suite_report import Check, StageResult, draw_charts, suite_json, suite_markdown
from suite_stages import STAGES, SuiteConfig, available_stages


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 s windows, 10k requests for memory, 2k for Zipf: checks the suite works, "
        "the numbers are not for publishing (written to bench/results/quick/)",
    )
    parser.add_argument(
        "--stages",
        default=",".join(available_stages()),
        help=f"comma list from {', '.join(STAGES)} (default: all available)",
    )
    parser.add_argument("--out", type=Path, help="results directory (default bench/results)")
    sizes = parser.add_argument_group("sizes of the scale stages (default: full or --quick's)")
    for name, kind, text in SCALE_OPTIONS:
        sizes.add_argument(f"--{name.replace('_', '-')}", type=kind, help=text)
    return parser.parse_args()


SCALE_OPTIONS = [
    ("stream_concurrency", int, "streams: streams at once (500; quick 50)"),
    ("stream_deltas", int, "streams: text deltas per answer (200; quick 40)"),
    ("stream_interval_ms", float, "streams: ms between deltas (25)"),
    ("stream_seconds", float, "streams: seconds new streams start (20; quick 2)"),
    ("slow_concurrency", int, "slowup: concurrent requests (1024; quick 128)"),
    ("slow_latency_ms", float, "slowup: upstream latency (200)"),
    ("slow_seconds", float, "slowup: timed seconds per target (8; quick 2)"),
]


def run_stage(name: str, cfg: SuiteConfig, load: WrkLoad) -> StageResult:
    """Run one stage; a stage that fails is reported as such and the others still run."""
    log(f"stage {name}")
    started = time.monotonic()
    try:
        result = STAGES[name](cfg, load)
    except Exception as error:
        log(traceback.format_exc())
        result = StageResult(
            name=name,
            title=f"{name}: FAILED",
            notes=[f"the stage raised {type(error).__name__}; see the log above"],
            header=[],
            rows=[],
            checks=[Check("stage ran", str(error).strip()[:300], False, "stage failed")],
            data={"error": str(error)},
            failed=True,
        )
    result.seconds = time.monotonic() - started
    for line in result.check_lines():
        log(f"  {line}")
    return result


def main() -> None:
    args = parse_args()
    names = [n.strip() for n in args.stages.split(",") if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        sys.exit(f"unknown stage(s): {', '.join(unknown)}; known: {', '.join(STAGES)}")
    load = pick_load_generator("wrk")
    assert isinstance(load, WrkLoad)
    overrides = {n: getattr(args, n) for n, _, _ in SCALE_OPTIONS if getattr(args, n) is not None}
    cfg = SuiteConfig.make(args.quick, **overrides)
    out: Path = args.out or (BENCH_DIR / "results" / ("quick" if args.quick else ""))
    header = machine_lines(sys.argv)
    if cfg.quick:
        header.append("QUICK RUN (--quick): short windows, a functional check, not for publishing")
    started = time.monotonic()
    stages = [run_stage(name, cfg, load) for name in names]
    header.append(f"suite time: {time.monotonic() - started:.0f} s")
    charts = {}
    for stage in stages:
        png = out / f"suite-{stage.name}.png"
        if draw_charts(stage, png):
            charts[stage.name] = png.name
    text = suite_markdown(stages, header, charts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.md").write_text(text + "\n")
    (out / "suite.json").write_text(json.dumps(suite_json(stages, header), indent=2) + "\n")
    print(text)
    log(f"wrote {out / 'suite.md'}, {out / 'suite.json'} and {len(charts)} charts")
    failed = [stage.name for stage in stages if stage.failed]
    if failed:
        sys.exit(f"stage(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
