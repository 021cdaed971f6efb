"""Terminal side of `promptrelay bench`: the rich progress bar, the report and the JSON file."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promptrelay.devtools.loadgen import BenchResult, LoadPlan, run_bench

__all__ = ["describe", "render", "run_with_progress", "write_json"]


def describe(plan: LoadPlan) -> str:
    """One line that states the loop, so nobody mistakes a closed loop for offered load."""
    bound = f"{plan.duration:g} s" if plan.duration is not None else f"{plan.requests:,} requests"
    workload = plan.workload.value
    if workload == "zipf":
        workload += f" ({plan.prompts} prompts, exponent {plan.exponent:g})"
    if plan.rate is None:
        loop = (
            f"closed loop: {plan.concurrency} workers, each sends its next request when its "
            "last one is answered"
        )
    else:
        loop = (
            f"open loop: {plan.rate:g} requests/s on a fixed schedule, at most "
            f"{plan.concurrency} connections; latency counts from each scheduled start"
        )
    return f"POST {plan.url.rstrip('/')}/v1/messages, workload {workload}, {bound}, {loop}"


def run_with_progress(plan: LoadPlan, console: Console, show: bool) -> BenchResult:
    """Run the plan under uvloop (when installed) with a progress bar on `console`."""
    total = plan.duration if plan.duration is not None else float(plan.requests or 0)
    columns = (
        TextColumn("[bold]bench[/]"),
        BarColumn(),
        TextColumn("{task.fields[sent]:>9,} sent"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=True) as bar:
        task = bar.add_task("load", total=total, sent=0)

        def progress(sent: int, elapsed: float) -> None:
            done = elapsed if plan.duration is not None else float(sent)
            bar.update(task, completed=min(done, total), sent=sent)

        try:
            import uvloop
        except ImportError:  # uvloop is a dependency everywhere but Windows
            return asyncio.run(run_bench(plan, progress))
        return uvloop.run(run_bench(plan, progress))


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.2f}"


def render(result: BenchResult, plan: LoadPlan, console: Console) -> None:
    """The report: throughput, latency, failures and hit rate, each labelled."""
    table = Table(title="promptrelay bench", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("loop", plan.loop + (f" at {plan.rate:g}/s" if plan.rate else "")),
        ("concurrency (max connections)", str(plan.concurrency)),
        ("requests sent", f"{result.sent:,}"),
        ("2xx answers", f"{result.ok:,}"),
        ("failed", f"{result.failed:,}"),
        ("elapsed s", f"{result.seconds:.2f}"),
        ("2xx answers/s", f"{result.rps:,.1f}"),
        ("p50 ms", _ms(result.p50_ms)),
        ("p95 ms", _ms(result.p95_ms)),
        ("p99 ms", _ms(result.p99_ms)),
        ("max ms", _ms(result.max_ms)),
    ]
    if plan.workload.value == "stream":
        rows.append(("SSE events (2xx streams)", f"{result.events:,}"))
        rows.append(("SSE events/s", f"{result.events_per_s:,.1f}"))
    for name, count in sorted(result.errors.items()):
        rows.append((f"errors: {name}", f"{count:,}"))
    hit_rate = result.hit_rate
    rows.append(
        ("hit rate (x-cache)", "no x-cache header" if hit_rate is None else f"{hit_rate:.2%}")
    )
    for label, count in sorted(result.x_cache.items()):
        rows.append((f"x-cache: {label}", f"{count:,}"))
    rows.append(("this client's CPU", f"{result.client_cpu_pct:.0f}% of one core"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(describe(plan))
    console.print(table)
    console.print(
        "Latencies are of 2xx answers; 'failed' counts non-2xx, timeouts and broken connections."
    )
    if result.client_cpu_pct >= 85:
        console.print(
            "[yellow]This client used most of a core: it may be the limit, not the server "
            "(for throughput ceilings use wrk, see bench/ in the repository).[/]"
        )


def write_json(result: BenchResult, plan: LoadPlan, path: Path) -> None:
    plan_data = {
        "url": plan.url,
        "workload": plan.workload.value,
        "loop": plan.loop,
        "concurrency": plan.concurrency,
        "duration_s": plan.duration,
        "requests": plan.requests,
        "rate": plan.rate,
        "prompts": plan.prompts,
        "exponent": plan.exponent,
        "model": plan.model,
        "max_tokens": plan.max_tokens,
        "tag": plan.tag,
    }
    data = {"plan": plan_data, "result": result.to_json()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(data), indent=2, allow_nan=False) + "\n")


def _no_nan(value: object) -> object:
    """JSON has no NaN: a percentile of no answers is written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return value
