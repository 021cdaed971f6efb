"""The bench suite's target checks (bench/suite_report.py): met, or missed by how much."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))
report: Any = importlib.import_module("suite_report")


def test_at_least_met_and_missed():
    assert report.at_least("x ≥ 0.8", 0.9, 0.8, "x").verdict == "met"
    missed = report.at_least("x ≥ 0.8", 0.5, 0.8, "x")
    assert missed.met is False
    assert missed.verdict == "MISSED (short by 0.30x, 38%)"


def test_at_most_met_and_missed():
    assert report.at_most("p50 ≤ 2 ms", 2.0, 2.0, " ms").met is True
    missed = report.at_most("p50 ≤ 2 ms", 2.5, 2.0, " ms")
    assert missed.verdict == "MISSED (over by 0.50 ms, 25%)"


def test_unmeasured_value_is_not_a_pass():
    check = report.at_least("x", math.nan, 1.0)
    assert check.met is None
    assert check.verdict == "not measured"


def test_suite_json_has_no_nan():
    stage = report.StageResult(
        name="s",
        title="t",
        notes=[],
        header=[],
        rows=[],
        checks=[report.at_most("y", 3.0, 1.0)],
        data={"p50": math.nan, "nested": [{"v": math.nan}]},
    )
    data = report.suite_json([stage], ["machine"])
    assert data["stages"]["s"]["data"] == {"p50": None, "nested": [{"v": None}]}
    assert data["stages"]["s"]["checks"][0]["verdict"].startswith("MISSED")
    markdown = report.suite_markdown([stage], ["machine"], {})
    assert "Targets met: 0 of 1." in markdown
