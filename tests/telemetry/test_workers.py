"""`promptrelay serve --workers 2` as a real process: /metrics sums both workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_redis import free_port


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("promptrelay --workers 2 did not start") from None
            time.sleep(0.05)


def _totals(text: str) -> tuple[float, set[str]]:
    """Requests counted and worker pids seen; families a worker has not synced yet are
    simply absent (the caller polls)."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counted = families.get("promptrelay_requests")
    requests = sum(s.value for s in counted.samples if s.name.endswith("_total")) if counted else 0
    memory = families.get("promptrelay_process_resident_memory_bytes")
    pids = {s.labels["pid"] for s in memory.samples} if memory else set()
    return requests, pids


async def test_two_workers_count_every_request_once(fake_upstream):
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "ANTHROPIC_API_KEY": "k",
        "ANTHROPIC_BASE_URL": fake_upstream.url,
        "TELEMETRY_INTERVAL": "0.2",
        "LOG_LEVEL": "warning",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "promptrelay", "serve", "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    n = 40
    metrics_dir: Path | None = None
    try:
        _wait_listening(port, process)
        # a new connection per request, so the kernel spreads them over both workers
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(n):
                body = {
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": f"worker test {i}"}],
                }
                async with session.post(
                    f"{url}/v1/messages",
                    data=orjson.dumps(body),
                    headers={"content-type": "application/json"},
                ) as response:
                    assert response.status == 200
            deadline = time.monotonic() + 15
            while True:  # until both workers have sampled (their RSS gauges exist)
                async with session.get(f"{url}/metrics") as response:
                    text = await response.text()
                requests, pids = _totals(text)
                if (requests == n and len(pids) == 2) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # more than two sampling periods: every worker synced
            scrapes = []
            for _ in range(8):  # each scrape lands on either worker
                async with session.get(f"{url}/metrics") as response:
                    scrapes.append(_totals(await response.text()))
        assert all(requests == n for requests, _ in scrapes), scrapes
        assert all(len(pids) == 2 for _, pids in scrapes), scrapes
        assert fake_upstream.stats()["by_path"]["/v1/messages"] == n
        workers = psutil.Process(process.pid).children(recursive=True)
        dirs = {w.environ().get("PROMETHEUS_MULTIPROC_DIR") for w in workers}
        dirs.discard(None)
        assert len(dirs) == 1
        metrics_dir = Path(str(dirs.pop()))
        assert metrics_dir.is_dir() and any(metrics_dir.iterdir())
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert metrics_dir is not None and not metrics_dir.exists()  # removed by serve
