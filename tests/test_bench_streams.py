"""The scale stages' own parts (bench/): the stream load generator's counts, the minimal
proxy's streaming pass-through and the raw ASGI floor, over real HTTP against the fake."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from promptrelay.devtools.fake import FakeConfig, FakeUpstreamThread

BENCH = Path(__file__).resolve().parent.parent / "bench"
DELTAS = 30
OTHER_EVENTS = 7  # message_start, content_block_start, ping, an unknown type, and 3 after


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server(script: str, *args: str) -> Iterator[tuple[str, int]]:
    port = _free_port()
    argv = [sys.executable, str(BENCH / script), "--port", str(port), *args]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                assert process.poll() is None, f"{script} exited early"
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)


def _stream_load(url: str, *args: str) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "stream_load.py"), "--url", url, "--deltas", str(DELTAS)]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def paced_fake() -> Iterator[FakeUpstreamThread]:
    with FakeUpstreamThread(FakeConfig(stream_chunks=DELTAS, chunk_interval_ms=1)) as fake:
        yield fake


def test_streams_through_the_minimal_proxy_are_counted_event_by_event(paced_fake):
    with _server("reference_proxy.py", "--upstream", paced_fake.url, "--pool", "8") as (url, pid):
        result = _stream_load(
            url,
            "--concurrency",
            "3",
            "--duration",
            "0.2",
            "--expect-events",
            str(DELTAS),
            "--pid",
            str(pid),
        )
    assert result["errors"] == {}
    assert result["streams_ok"] == result["streams_started"] >= 3
    assert result["events"] == result["streams_ok"] * (DELTAS + OTHER_EVENTS)
    assert result["cpu_seconds"][str(pid)] >= 0
    assert result["peak_rss_mib"][str(pid)] > 0
    assert result["last_event_p99_ms"] >= result["first_byte_p50_ms"] > 0


def test_a_stream_short_of_its_events_is_an_error(paced_fake):
    result = _stream_load(
        paced_fake.url, "--concurrency", "2", "--duration", "0.1", "--expect-events", "500"
    )
    assert result["streams_ok"] == 0
    assert result["errors"] == {"incomplete stream": result["streams_started"]}


def test_raw_asgi_answers_the_stored_body(tmp_path):
    stored = b'{"id":"msg_1","type":"message","content":[]}'
    (tmp_path / "hit.json").write_bytes(stored)
    with _server("raw_asgi.py", "--body-file", str(tmp_path / "hit.json")) as (url, _pid):
        request = urllib.request.Request(f"{url}/v1/messages", data=b'{"x": 1}', method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.headers["content-length"] == str(len(stored))
            assert response.read() == stored
