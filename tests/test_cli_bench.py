"""`promptrelay bench` against the real fake upstream and a real gateway: its counts are true."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from typer.testing import CliRunner

from promptrelay.cli import app
from promptrelay.devtools.loadgen import LoadPlan, Workload, percentile, run_bench


def _bench(tmp_path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "bench.json"
    argv = ["bench", "--no-progress", "--json", str(out), *args]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    data = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, data, result.output


def _upstream_calls(fake) -> int:
    return int(fake.stats()["by_path"].get("/v1/messages", 0))


def test_unique_requests_sent_equal_the_upstream_count(fake_upstream, tmp_path):
    code, data, output = _bench(
        tmp_path, "--url", fake_upstream.url, "--api-key", "secret-k", "-n", "300", "-c", "8"
    )
    assert code == 0, output
    result = data["result"]
    assert result["sent"] == result["ok"] == 300
    assert result["errors"] == {}
    assert _upstream_calls(fake_upstream) == 300
    assert fake_upstream.stats()["api_keys_seen"] == ["secret-k"]
    assert result["hit_rate"] is None  # the fake sends no x-cache
    assert "closed loop" in output
    assert "secret-k" not in output
    assert "secret-k" not in (tmp_path / "bench.json").read_text()


def test_duration_run_counts_every_request_it_sent(fake_upstream, tmp_path):
    code, data, output = _bench(
        tmp_path, "--url", fake_upstream.url, "--api-key", "k", "-d", "0.5", "-c", "4"
    )
    assert code == 0, output
    result = data["result"]
    assert result["sent"] > 0
    assert result["sent"] == result["ok"] == _upstream_calls(fake_upstream)
    assert 0.5 <= result["seconds"] < 5
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]


def test_repeat_through_the_gateway_reports_the_hit_rate(gateway_factory, fake_upstream, tmp_path):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    code, data, output = _bench(
        tmp_path, "--url", gateway.url, "-w", "repeat", "-n", "200", "-c", "4"
    )
    assert code == 0, output
    result = data["result"]
    assert result["ok"] == 200
    assert sum(result["x_cache"].values()) == 200
    calls = _upstream_calls(fake_upstream)
    assert 1 <= calls <= 4  # concurrent first requests may each miss (or share one call)
    assert result["x_cache"]["HIT"] >= 200 - 4
    assert result["hit_rate"] == pytest.approx(result["x_cache"]["HIT"] / 200)
    assert "hit rate (x-cache)" in output


def test_unique_through_the_gateway_is_all_misses(gateway_factory, fake_upstream, tmp_path):
    gateway = gateway_factory(anthropic_api_key="gw", anthropic_base_url=fake_upstream.url)
    code, data, _ = _bench(tmp_path, "--url", gateway.url, "-n", "100", "-c", "4")
    assert code == 0
    assert data["result"]["x_cache"] == {"MISS": 100}
    assert data["result"]["hit_rate"] == 0.0
    assert _upstream_calls(fake_upstream) == 100


def test_failures_are_counted_by_status(fake_upstream, tmp_path):
    fake_upstream.configure(fail_next=7, fail_next_status=429)
    code, data, output = _bench(
        tmp_path, "--url", fake_upstream.url, "--api-key", "k", "-n", "50", "-c", "2"
    )
    assert code == 0, output
    result = data["result"]
    assert result["errors"] == {"429": 7}
    assert result["ok"] == 43
    assert result["failed"] == 7
    assert "errors: 429" in output


def test_all_failing_exits_non_zero(fake_upstream, tmp_path):
    fake_upstream.configure(fail_status=500, fail_rate=1.0)
    code, data, _ = _bench(tmp_path, "--url", fake_upstream.url, "--api-key", "k", "-n", "20")
    assert code == 1
    assert data["result"]["errors"] == {"500": 20}
    assert data["result"]["p50_ms"] is None  # no 2xx answer: no latency, written as null


def test_missing_api_key_is_a_401_count(fake_upstream, tmp_path):
    code, data, _ = _bench(tmp_path, "--url", fake_upstream.url, "-n", "5")
    assert code == 1
    assert data["result"]["errors"] == {"401": 5}


def test_refused_connection_is_counted(tmp_path):
    from tests.fixtures_redis import free_port

    url = f"http://127.0.0.1:{free_port()}"
    code, data, _ = _bench(tmp_path, "--url", url, "-n", "3", "-c", "1", "--timeout", "5")
    assert code == 1
    assert data["result"]["errors"] == {"connection": 3}


def test_open_loop_sends_on_schedule(fake_upstream, tmp_path):
    code, data, output = _bench(
        tmp_path, "--url", fake_upstream.url, "--api-key", "k", "--rate", "200", "-d", "1"
    )
    assert code == 0, output
    result = data["result"]
    assert result["loop"] == "open"
    assert result["sent"] == result["ok"] == 200 == _upstream_calls(fake_upstream)
    assert "open loop" in output


def test_zipf_and_stream_workloads(fake_upstream):
    zipf = LoadPlan(
        url=fake_upstream.url,
        api_key="k",
        requests=500,
        duration=None,
        workload=Workload.ZIPF,
        prompts=20,
        concurrency=4,
    )
    result = asyncio.run(run_bench(zipf))
    assert result.ok == 500 == _upstream_calls(fake_upstream)
    fake_upstream.reset()
    stream = LoadPlan(
        url=fake_upstream.url, api_key="k", requests=30, duration=None, workload=Workload.STREAM
    )
    result = asyncio.run(run_bench(stream))
    assert result.ok == 30 == _upstream_calls(fake_upstream)
    assert fake_upstream.stats()["by_status"] == {"200": 30}


def test_zipf_draws_follow_the_ranks():
    from promptrelay.devtools.loadgen import body_maker

    plan = LoadPlan(url="http://x", workload=Workload.ZIPF, prompts=50, exponent=1.1, seed=3)
    make = body_maker(plan)
    counts: dict[bytes, int] = {}
    for n in range(20_000):
        body = make(n)
        counts[body] = counts.get(body, 0) + 1
    assert len(counts) <= 50
    top = counts[_rank_body(plan, 1)]
    second = counts[_rank_body(plan, 2)]
    # weight 1/k^1.1: rank 1 is drawn 2^1.1 = 2.14 times as often as rank 2
    assert 1.8 < top / second < 2.5


def _rank_body(plan: LoadPlan, rank: int) -> bytes:
    prompt = f"promptrelay bench {plan.tag} zipf rank {rank}"
    return (
        b'{"model":"claude-sonnet-4-6","max_tokens":64,"messages":'
        + json.dumps([{"role": "user", "content": prompt}], separators=(",", ":")).encode()
        + b"}"
    )


def test_bad_url_is_refused(tmp_path):
    code, data, output = _bench(tmp_path, "--url", "127.0.0.1:8080", "-n", "1")
    assert code == 2
    assert "http://" in output
    assert data == {}


def test_both_bounds_are_refused(tmp_path):
    code, _, output = _bench(tmp_path, "-d", "1", "-n", "5")
    assert code == 2
    assert "not both" in output


def test_help_documents_every_option():
    import typer.main

    command = typer.main.get_command(app).commands["bench"]  # type: ignore[attr-defined]
    for param in command.params:
        assert param.help, f"{param.name} has no help text"
    output = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"}).output
    for option in (
        "--url",
        "--concurrency",
        "--duration",
        "--requests",
        "--workload",
        "--prompts",
        "--exponent",
        "--rate",
        "--api-key",
        "--model",
        "--max-tokens",
        "--timeout",
        "--seed",
        "--tag",
        "--json",
        "--progress",
    ):
        assert option in output
    assert "Closed loop by default" in output


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def test_stream_workload_counts_every_sse_event(fake_upstream, tmp_path):
    fake_upstream.configure(stream_chunks=5, chunk_interval_ms=1)
    code, data, output = _bench(
        tmp_path, "--url", fake_upstream.url, "--api-key", "k", "-w", "stream", "-n", "20"
    )
    assert code == 0, output
    result = data["result"]
    assert result["ok"] == 20
    # each answer: message_start, content_block_start, ping, an unknown event type,
    # 5 text deltas, content_block_stop, message_delta, message_stop
    assert result["events"] == 20 * 12
    assert result["events_per_s"] > 0
    assert "SSE events (2xx streams)" in output


def test_json_answers_have_no_sse_events(fake_upstream, tmp_path):
    code, data, output = _bench(tmp_path, "--url", fake_upstream.url, "--api-key", "k", "-n", "10")
    assert code == 0, output
    assert data["result"]["events"] == 0
    assert "SSE events" not in output
