"""Shared plumbing for the benchmarks: server processes, load generators, reports.

Every server under test runs as its own process (started here, stopped by PID), so the
load generator, the upstream and the proxy never share an interpreter or a GIL. Load
comes from `wrk` with bench/unique_post.lua when it is installed, else from a closed-loop
aiohttp client in this process. Either way every request carries a different prompt, so
nothing can be answered from a cache.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BIN_DIR = Path(sys.executable).parent
API_KEY = "bench-key"
_HEADERS = {
    "content-type": "application/json",
    "x-api-key": API_KEY,
    "anthropic-version": "2023-06-01",
}


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def message_body(tag: str, n: int) -> bytes:
    prompt = f"bench {tag} n{n}"
    return json.dumps(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()


# --- server processes -------------------------------------------------------------------


class Service:
    """One server process: started, polled until it answers, stopped by its PID."""

    def __init__(
        self, name: str, argv: Sequence[str], ready_url: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.name, self.argv, self.ready_url = name, list(argv), ready_url
        self.env = dict(os.environ if env is None else env)
        # Closed (and removed) in stop(); the child writes to it meanwhile.
        self._log = tempfile.NamedTemporaryFile(
            prefix=f"bench-{name.replace(' ', '-')}-", suffix=".log", delete=False
        )
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._popen is not None, "service not started"
        return self._popen.pid

    def start(self, timeout: float = 20.0) -> Service:
        log(f"starting {self.name} ({self.ready_url}): {shlex.join(self.argv)}")
        self._popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=REPO_DIR,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer {self.ready_url} in {timeout} s")

    def ready(self) -> bool:
        """Whether the server answers yet (any HTTP answer at ready_url counts)."""
        return _answers(self.ready_url)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far."""
        times = psutil.Process(self.pid).cpu_times()
        return times.user, times.system

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is not None and popen.poll() is None:
            os.kill(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(popen.pid, signal.SIGKILL)
                popen.wait()
        self._log.close()
        os.unlink(self._log.name)

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@contextmanager
def services(stack_items: Sequence[Service]) -> Iterator[list[Service]]:
    """Start the services in order; stop every started one on the way out, whatever happens."""
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        with ExitStack() as stack:
            started = []
            for service in stack_items:
                stack.callback(service.stop)
                started.append(service.start())
            yield started
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def fake_upstream(*flags: str) -> Service:
    """The fake Anthropic API; `flags` are `promptrelay fake-upstream` options
    (e.g. "--stream-chunks", "200", "--chunk-interval-ms", "25")."""
    port = free_port()
    argv = [str(BIN_DIR / "promptrelay"), "fake-upstream", "--port", str(port), *flags]
    return Service("fake upstream", argv, f"http://127.0.0.1:{port}/_fake/stats")


def reference_proxy(upstream_url: str, client: str = "aiohttp", pool: int = 100) -> Service:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "reference_proxy.py"), "--port", str(port)]
    argv += ["--upstream", upstream_url, "--client", client, "--pool", str(pool)]
    return Service(f"reference proxy ({client})", argv, f"http://127.0.0.1:{port}/")


def service_url(service: Service) -> str:
    match = re.match(r"(http://[^/]+)", service.ready_url)
    assert match is not None
    return match.group(1)


def fake_stats(fake_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{fake_url}/_fake/stats", timeout=5) as response:
        stats: dict[str, Any] = json.load(response)
        return stats


def fake_reset(fake_url: str) -> None:
    request = urllib.request.Request(f"{fake_url}/_fake/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


# --- load generators --------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    requests: int  # answered with 2xx
    errors: int  # failed, timed out or non-2xx
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class LoadGenerator(Protocol):
    name: str

    def run(self, url: str, concurrency: int, seconds: float, tag: str) -> LoadResult: ...


class WrkLoad:
    """Debian's `wrk`, one thread, POST bodies made unique by bench/unique_post.lua."""

    name = "wrk (1 thread, Lua script bench/unique_post.lua: a unique prompt per request)"
    _RESULT = re.compile(r"^WRK_RESULT (.*)$", re.MULTILINE)

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def run(
        self,
        url: str,
        concurrency: int,
        seconds: float,
        tag: str,
        script: str = "unique_post.lua",
        script_args: Sequence[str] = (),
    ) -> LoadResult:
        argv = self.command(url, concurrency, seconds, tag, script, script_args)
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        return self.parse(done.returncode, done.stdout, done.stderr)

    def command(
        self,
        url: str,
        concurrency: int,
        seconds: float,
        tag: str,
        script: str = "unique_post.lua",
        script_args: Sequence[str] = (),
    ) -> list[str]:
        """wrk's argv; `script` is a bench/ Lua file that prints one WRK_RESULT line."""
        argv = [self.executable, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
        argv += ["--timeout", "10s", "-s", str(BENCH_DIR / script), url, "--", tag, *script_args]
        return argv

    def parse(self, returncode: int, stdout: str, stderr: str) -> LoadResult:
        match = self._RESULT.search(stdout)
        if returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({returncode}):\n{stdout}\n{stderr}")
        fields = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
        errors = sum(fields[k] for k in ("connect", "read", "write", "status", "timeout"))
        return LoadResult(
            requests=int(fields["requests"] - fields["status"]),
            errors=int(errors),
            seconds=fields["duration_us"] / 1e6,
            p50_ms=fields["p50_us"] / 1e3,
            p99_ms=fields["p99_us"] / 1e3,
        )


class AiohttpLoad:
    """Closed loop in this process: `concurrency` workers, each sends its next request
    as soon as the previous answer arrives. Slower than wrk, so it caps req/s lower."""

    name = "closed-loop aiohttp client in the bench process (wrk not found)"

    def run(self, url: str, concurrency: int, seconds: float, tag: str) -> LoadResult:
        return _new_loop().run_until_complete(self._run(url, concurrency, seconds, tag))

    async def _run(self, url: str, concurrency: int, seconds: float, tag: str) -> LoadResult:
        import aiohttp

        latencies: list[float] = []
        errors = 0
        connector = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            start = time.perf_counter()
            deadline = start + seconds

            async def worker(worker_id: int) -> None:
                nonlocal errors
                n = 0
                while (sent := time.perf_counter()) < deadline:
                    n += 1
                    body = message_body(f"{tag} w{worker_id}", n)
                    try:
                        async with session.post(
                            f"{url}/v1/messages", data=body, headers=_HEADERS
                        ) as response:
                            await response.read()
                            ok = response.status < 300
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    if ok:
                        latencies.append(time.perf_counter() - sent)
                    else:
                        errors += 1

            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            elapsed = time.perf_counter() - start
        return LoadResult(
            requests=len(latencies),
            errors=errors,
            seconds=elapsed,
            p50_ms=_percentile(latencies, 50) * 1e3,
            p99_ms=_percentile(latencies, 99) * 1e3,
        )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # optional
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def pick_load_generator(choice: str) -> LoadGenerator:
    """`auto`: wrk when installed, else the aiohttp client; `wrk` insists on wrk."""
    executable = shutil.which("wrk")
    if executable is not None and choice in ("auto", "wrk"):
        return WrkLoad(executable)
    if choice == "wrk":
        sys.exit("wrk is not installed: run `sudo apt-get install wrk`, or use --load aiohttp")
    if choice == "auto":
        log("wrk not found, using the slower aiohttp client (`sudo apt-get install wrk` for wrk)")
    return AiohttpLoad()


# --- reports ----------------------------------------------------------------------------


def machine_lines(argv: Sequence[str]) -> list[str]:
    """Command, machine and date, for the top of a results file."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    load1, load5, _ = os.getloadavg()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return [
        f"command: `{shlex.join([python, *argv])}`",
        f"machine: nproc={len(os.sched_getaffinity(0))}, CPU: {model}, "
        f"load average before the run: {load1:.2f} (1 min), {load5:.2f} (5 min)",
        f"date: {now}",
        f"code: {_revision()}, python {sys.version.split()[0]}",
    ]


def _revision() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src")
    suffix = " plus uncommitted changes in src/ (measured as found)" if dirty else ""
    return f"git {head}{suffix}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(report: str, data: dict[str, Any], md: str | None, js: str | None) -> None:
    print(report)
    if md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(report + "\n")
        log(f"wrote {md}")
    if js:
        Path(js).parent.mkdir(parents=True, exist_ok=True)
        Path(js).write_text(json.dumps(data, indent=2) + "\n")
        log(f"wrote {js}")
