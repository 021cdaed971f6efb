"""The suite's results: targets checked against measurements, Markdown, JSON and PNG charts.

Every stage returns a `StageResult`: a table of what it measured, the issue's targets as
`Check`s (met, or missed by how much), and bar `Chart`s. This module turns a list of them
into bench/results/suite.md, suite.json and one PNG per stage (matplotlib, Agg backend).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit import log, markdown_table


@dataclass(frozen=True)
class Check:
    """One target from issue 7 next to the value measured for it."""

    target: str
    measured: str
    met: bool | None  # None: could not be measured in this run
    gap: str = ""  # how far off when missed

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        return "met" if self.met else f"MISSED ({self.gap})"


def at_least(target: str, value: float, bound: float, unit: str = "", digits: int = 2) -> Check:
    """value >= bound; a miss says by how much, absolute and as a share of the bound."""
    measured = f"{value:,.{digits}f}{unit}"
    if math.isnan(value):
        return Check(target, "no value", None)
    if value >= bound:
        return Check(target, measured, True)
    short = bound - value
    return Check(
        target, measured, False, f"short by {short:,.{digits}f}{unit}, {short / bound:.0%}"
    )


def at_most(target: str, value: float, bound: float, unit: str = "", digits: int = 2) -> Check:
    """value <= bound; a miss says by how much it is over."""
    measured = f"{value:,.{digits}f}{unit}"
    if math.isnan(value):
        return Check(target, "no value", None)
    if value <= bound:
        return Check(target, measured, True)
    over = value - bound
    share = f", {over / bound:.0%}" if bound else ""
    return Check(target, measured, False, f"over by {over:,.{digits}f}{unit}{share}")


@dataclass(frozen=True)
class Chart:
    title: str
    ylabel: str
    bars: Sequence[tuple[str, float]]
    line: float | None = None  # a target drawn across the bars
    line_label: str = "target"
    log_scale: bool = False


@dataclass
class StageResult:
    name: str
    title: str
    notes: list[str]
    header: list[str]
    rows: list[list[str]]
    checks: list[Check]
    data: dict[str, Any]
    charts: list[Chart] = field(default_factory=list)
    seconds: float = 0.0
    extra_markdown: str = ""
    failed: bool = False

    def check_lines(self) -> list[str]:
        return [f"- {c.target}: {c.measured} — {c.verdict}" for c in self.checks]


def stage_markdown(stage: StageResult, chart: str | None) -> str:
    lines = [f"## {stage.title}", "", *(f"- {note}" for note in stage.notes), ""]
    if stage.rows:
        lines += [markdown_table(stage.header, stage.rows), ""]
    if stage.checks:
        lines += ["Targets:", "", *stage.check_lines(), ""]
    if chart:
        lines += [f"![{stage.title}]({chart})", ""]
    if stage.extra_markdown:
        lines += [stage.extra_markdown, ""]
    lines.append(f"_stage time: {stage.seconds:.0f} s_")
    return "\n".join(lines)


def summary_table(stages: Sequence[StageResult]) -> str:
    rows = [
        [stage.name, check.target, check.measured, check.verdict]
        for stage in stages
        for check in stage.checks
    ]
    return markdown_table(["stage", "target", "measured", "verdict"], rows)


def suite_markdown(
    stages: Sequence[StageResult], header_lines: Sequence[str], charts: dict[str, str]
) -> str:
    met = sum(1 for s in stages for c in s.checks if c.met)
    total = sum(1 for s in stages for c in s.checks)
    parts = [
        "# promptrelay benchmark suite",
        "",
        *(f"- {line}" for line in header_lines),
        "",
        f"Targets met: {met} of {total}.",
        "",
        summary_table(stages),
        "",
    ]
    parts += [stage_markdown(stage, charts.get(stage.name)) + "\n" for stage in stages]
    return "\n".join(parts)


def suite_json(stages: Sequence[StageResult], header_lines: Sequence[str]) -> dict[str, Any]:
    return {
        "machine": list(header_lines),
        "stages": {
            stage.name: {
                "title": stage.title,
                "notes": stage.notes,
                "seconds": stage.seconds,
                "checks": [{**asdict(c), "verdict": c.verdict} for c in stage.checks],
                "data": _no_nan(stage.data),
            }
            for stage in stages
        },
    }


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: unmeasured numbers are written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def draw_charts(stage: StageResult, path: Path) -> bool:
    """One PNG with a subplot per chart; False (and a note) when matplotlib is missing."""
    if not stage.charts:
        return False
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        log("matplotlib is not installed (`pip install -e '.[bench]'`): no charts")
        return False
    count = len(stage.charts)
    figure, axes = plt.subplots(1, count, figsize=(4.6 * count, 3.8), squeeze=False)
    for axis, chart in zip(axes[0], stage.charts, strict=True):
        _draw_one(axis, chart)
    figure.suptitle(stage.title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _draw_one(axis: Any, chart: Chart) -> None:
    labels = [label for label, _ in chart.bars]
    values = [0.0 if math.isnan(v) else v for _, v in chart.bars]
    bars = axis.bar(range(len(values)), values, color="#4c72b0")
    axis.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(chart.ylabel, fontsize=8)
    axis.set_title(chart.title, fontsize=9)
    if chart.log_scale:
        axis.set_yscale("log")
    else:
        axis.set_ylim(0, max([*values, chart.line or 0.0, 1e-9]) * 1.15)
    for bar, value in zip(bars, values, strict=True):
        axis.annotate(
            f"{value:,.0f}" if value >= 100 else f"{value:.3g}",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    if chart.line is not None:
        axis.axhline(chart.line, color="#c44e52", linestyle="--", linewidth=1)
        axis.annotate(
            chart.line_label,
            (1, chart.line),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            fontsize=7,
            color="#c44e52",
        )
