"""Command line: `promptrelay serve | fake-upstream | bench | status | cache stats|clear|warm`."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from promptrelay.devtools.loadgen import Workload
from promptrelay.settings import ConfigError, Settings, export_overrides, load_settings

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="promptrelay: a Claude gateway.")


def _settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as error:
        typer.echo(f"promptrelay: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [env HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env PORT].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [env WORKERS].")] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [env LOG_LEVEL].")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Start the gateway. Configuration comes from the environment (see README)."""
    import uvicorn

    from promptrelay.server import uvicorn_options

    overrides = {"host": host, "port": port, "workers": workers, "log_level": log_level}
    settings = _settings_or_exit(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    common = uvicorn_options(settings, access_log=access_log)
    if settings.workers > 1:
        # Workers are new processes: they rebuild Settings from the environment.
        export_overrides({k: v for k, v in overrides.items() if v is not None})
        with _metrics_dir(settings):
            uvicorn.run(
                "promptrelay.app:create_app", factory=True, workers=settings.workers, **common
            )
        return
    from promptrelay.app import build_app

    # uvicorn drains on SIGTERM, then re-raises the signal with the previous handler in
    # place; exiting 0 from that handler makes a graceful stop a successful exit.
    signal.signal(signal.SIGTERM, _exit_ok)
    uvicorn.run(build_app(settings, own_process=True), **common)


@contextlib.contextmanager
def _metrics_dir(settings: Settings) -> Iterator[None]:
    """Several workers share /metrics through prometheus-client's multiprocess mode.

    Unless PROMETHEUS_MULTIPROC_DIR is set, a fresh temporary directory owned by this
    command holds the workers' metric files; it is removed when the server stops.
    """
    if settings.prometheus_multiproc_dir is not None or not settings.telemetry_enabled:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="promptrelay-metrics-") as path:
        export_overrides({"prometheus_multiproc_dir": path})
        yield


def _exit_ok(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command("fake-upstream")
def fake_upstream(
    port: Annotated[int, typer.Option(help="Listen port.")] = 8099,
    host: Annotated[str, typer.Option(help="Listen address (loopback only).")] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(help="Added latency per answer.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Random extra latency, up to this.")] = 0.0,
    stream_chunks: Annotated[int, typer.Option(help="Text deltas per streamed answer.")] = 5,
    chunk_interval_ms: Annotated[float, typer.Option(help="Pause between deltas.")] = 0.0,
    fail_status: Annotated[int | None, typer.Option(help="Status of injected failures.")] = None,
    fail_rate: Annotated[float, typer.Option(help="Fraction of requests that fail.")] = 0.0,
) -> None:
    """Run the fake Anthropic API (for tests, benchmarks and trying promptrelay out)."""
    from promptrelay.devtools.fake import FakeConfig, run_fake_upstream

    config = FakeConfig(
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        stream_chunks=stream_chunks,
        chunk_interval_ms=chunk_interval_ms,
        fail_status=fail_status,
        fail_rate=fail_rate,
    )
    typer.echo(f"fake Anthropic API on http://{host}:{port}")
    run_fake_upstream(host, port, config)


_BENCH_HELP = (
    "Drive load at promptrelay (or any Anthropic-compatible URL) and report it.\n\n"
    "POSTs Messages API bodies to URL/v1/messages over one HTTP session holding at most "
    "--concurrency connections. Prints 2xx answers/s, p50/p95/p99/max latency of the 2xx "
    "answers, failures by HTTP status or kind (timeout, connection), and the hit rate from "
    "promptrelay's x-cache header.\n\n"
    "Closed loop by default: --concurrency workers, each sends its next request as soon as "
    "its previous answer arrived, so the server's speed sets the rate. With --rate it is an "
    "open loop: requests start on a fixed schedule whatever the answers do, and latency "
    "counts from each scheduled start. This client is Python: on a small machine it can be "
    "the limit before the server (the report shows its CPU use).\n\n"
    "Workloads: unique (a new prompt every request: all misses), repeat (one prompt: hits "
    "after the first), zipf (--prompts prompts, rank k drawn with weight 1/k^--exponent), "
    "stream (unique prompts with stream true, each read to its end; the report adds the SSE "
    "events received and events/s).\n\n"
    "Exit status: 0, or 1 when no request got a 2xx answer, 2 for bad options."
)


# The options of `promptrelay bench` whose declarations take more than a line.
_BenchUrl = Annotated[str, typer.Option(help="Base URL; requests go to URL/v1/messages.")]
_Concurrency = Annotated[
    int,
    typer.Option("--concurrency", "-c", min=1, help="Workers (closed loop) and max connections."),
]
_Duration = Annotated[
    float | None,
    typer.Option(
        "--duration",
        "-d",
        min=0.1,
        help="Seconds to run (10 when neither this nor --requests is given).",
    ),
]
_Requests = Annotated[
    int | None,
    typer.Option("--requests", "-n", min=1, help="Send this many requests, then stop."),
]
_Workload = Annotated[Workload, typer.Option("--workload", "-w", help="What to send (see above).")]
_Rate = Annotated[float | None, typer.Option(min=0.001, help="Open loop at this many requests/s.")]
_ApiKey = Annotated[str | None, typer.Option(help="Sent as x-api-key (never printed or written).")]
_Tag = Annotated[
    str | None,
    typer.Option(help="Text in every prompt (random by default, so runs share no prompt)."),
]
_JsonFile = Annotated[
    Path | None, typer.Option("--json", help="Also write the plan and results here.")
]


@app.command(help=_BENCH_HELP)
def bench(
    url: _BenchUrl = "http://127.0.0.1:8080",
    concurrency: _Concurrency = 16,
    duration: _Duration = None,
    requests: _Requests = None,
    workload: _Workload = Workload.UNIQUE,
    prompts: Annotated[int, typer.Option(min=1, help="zipf: distinct prompts.")] = 200,
    exponent: Annotated[float, typer.Option(min=0.0, help="zipf: exponent s.")] = 1.1,
    rate: _Rate = None,
    api_key: _ApiKey = None,
    model: Annotated[str, typer.Option(help="model field of every body.")] = "claude-sonnet-4-6",
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens field of every body.")] = 64,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds one request may take.")] = 60.0,
    seed: Annotated[int, typer.Option(help="zipf: random seed.")] = 1,
    tag: _Tag = None,
    json_file: _JsonFile = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    from rich.console import Console

    from promptrelay.devtools.loadgen import LoadPlan
    from promptrelay.devtools.loadgen_report import render, run_with_progress, write_json

    if duration is not None and requests is not None:
        typer.echo("promptrelay bench: give --duration or --requests, not both", err=True)
        raise typer.Exit(2)
    extra = {"tag": tag} if tag else {}
    try:
        plan = LoadPlan(
            url=url,
            concurrency=concurrency,
            duration=None if requests is not None else (duration or 10.0),
            requests=requests,
            workload=workload,
            prompts=prompts,
            exponent=exponent,
            rate=rate,
            api_key=api_key,
            model=model,
            max_tokens=max_tokens,
            timeout=timeout,
            seed=seed,
            **extra,
        )
    except ValueError as error:
        typer.echo(f"promptrelay bench: {error}", err=True)
        raise typer.Exit(2) from None
    result = run_with_progress(plan, Console(stderr=True), progress)
    render(result, plan, Console())
    if json_file is not None:
        write_json(result, plan, json_file)
        typer.echo(f"wrote {json_file}")
    if result.ok == 0:
        raise typer.Exit(1)


cache_app = typer.Typer(no_args_is_help=True, help="Manage a running promptrelay's cache.")
app.add_typer(cache_app, name="cache")


@cache_app.command("warm")
def cache_warm(
    file: Annotated[typer.FileText, typer.Argument(help="JSONL: one Messages API body a line.")],
    url: Annotated[str, typer.Option(help="promptrelay's base URL.")] = "http://127.0.0.1:8080",
    admin_key: Annotated[
        str | None, typer.Option(envvar="ADMIN_API_KEY", help="Admin key, if the server has one.")
    ] = None,
    client_key: Annotated[
        str | None, typer.Option(help="Warm this client key's namespace.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Upstream calls at once.")] = 4,
    chunk: Annotated[int, typer.Option(min=1, max=1000, help="Requests per API call.")] = 20,
) -> None:
    """Fetch and store each request of FILE through POST /api/cache/warm."""
    import asyncio

    from promptrelay.warm import warm_file

    failed = asyncio.run(
        warm_file(
            file.read().splitlines(),
            url=url.rstrip("/"),
            admin_key=admin_key,
            client_key=client_key,
            concurrency=concurrency,
            chunk=chunk,
        )
    )
    raise typer.Exit(1 if failed else 0)


_URL = typer.Option(help="promptrelay's base URL.")
_ADMIN_KEY = typer.Option(envvar="ADMIN_API_KEY", help="Admin key, if the server has one.")


def _admin(*calls: tuple[str, dict[str, Any] | None], url: str, key: str | None) -> list[Any]:
    """Each (path, POST body or None) against URL, in order; exit 1 with the reason."""
    import asyncio

    from promptrelay.admin_client import AdminError, call

    async def run() -> list[Any]:
        return [await call(url, path, key, body) for path, body in calls]

    try:
        return asyncio.run(run())
    except AdminError as error:
        typer.echo(f"promptrelay: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    url: Annotated[str, _URL] = "http://127.0.0.1:8080",
    admin_key: Annotated[str | None, _ADMIN_KEY] = None,
) -> None:
    """One screen about a running gateway: mode, hit ratio, breaker, Redis, alerts, advice."""
    from rich.console import Console

    from promptrelay.admin_client import render_status

    # /api/dashboard: the /api/performance body behind the admin rule (None: telemetry off)
    health, view = _admin(("/api/health", None), ("/api/dashboard", None), url=url, key=admin_key)
    render_status(health, None if view is None else view["performance"], Console())


@cache_app.command("stats")
def cache_stats(
    url: Annotated[str, _URL] = "http://127.0.0.1:8080",
    admin_key: Annotated[str | None, _ADMIN_KEY] = None,
) -> None:
    """Hits, misses, savings and the memory tier's entries per namespace."""
    from rich.console import Console

    from promptrelay.admin_client import render_stats

    (stats,) = _admin(("/api/cache/stats", None), url=url, key=admin_key)
    render_stats(stats, Console())


@cache_app.command("clear")
def cache_clear(
    url: Annotated[str, _URL] = "http://127.0.0.1:8080",
    admin_key: Annotated[str | None, _ADMIN_KEY] = None,
    namespace: Annotated[str, typer.Option(help="Key namespace glob.")] = "*",
    content_type: Annotated[str, typer.Option(help="Content type glob.")] = "*",
    pattern: Annotated[str, typer.Option(help="Glob over the rest of the key.")] = "*",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
) -> None:
    """Remove matching entries in every tier and process."""
    what = f"pr:{namespace}:{content_type}:{pattern}"
    if not yes:
        typer.confirm(f"remove every cache entry matching {what}?", abort=True)
    spec = {"namespace": namespace, "content_type": content_type, "pattern": pattern}
    (answer,) = _admin(("/api/cache/clear", spec), url=url, key=admin_key)
    typer.echo(f"removed {answer['removed']} entries matching {answer['pattern']}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
