"""Fixtures: a real redis-server on a free port.

``redis_server`` gives each test a running, empty server (FLUSHALL) that it may kill,
restart, stop or continue; the process is started once per session and always ended,
by PID, at teardown. The machine's own Redis (port 6379) is never touched.

    def test_x(redis_server):
        redis_server.url            # redis://127.0.0.1:<port>/0
        redis_server.kill()         # SIGKILL; restart() brings it back on the same port
        redis_server.stop_signal()  # SIGSTOP; cont_signal() resumes it
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence

import pytest

__all__ = ["RedisServer", "free_port", "redis_server", "redis_server_session"]

REDIS_SERVER = "/usr/bin/redis-server"
_FORBIDDEN_PORT = 6379  # the machine's own Redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != _FORBIDDEN_PORT:
            return port


class RedisServer:
    """One redis-server process that this test session started and owns."""

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        if self.port == _FORBIDDEN_PORT:
            raise ValueError("refusing to manage the machine's own Redis on port 6379")
        self.extra_args = tuple(extra_args)
        self.password: str | None = None
        if "--requirepass" in self.extra_args:
            self.password = self.extra_args[self.extra_args.index("--requirepass") + 1]
        self._dir = tempfile.mkdtemp(prefix="promptrelay-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        if self.running:
            return
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", self._dir,
                "--loglevel", "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._stopped = False
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not answer PING")
            time.sleep(0.01)

    def command(self, *args: str, timeout: float = 1.0) -> bytes:
        """Send one command over a plain socket (authenticating first when needed)."""
        commands = [args]
        if self.password is not None:
            commands.insert(0, ("AUTH", self.password))
        payload = b"".join(_encode(command) for command in commands)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(payload)
            reply = b""
            while reply.count(b"\r\n") < len(commands):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        if self.password is not None:
            reply = reply.split(b"\r\n", 1)[1]
        return reply

    def flushall(self) -> None:
        if self.command("FLUSHALL") != b"+OK\r\n":
            raise RuntimeError("FLUSHALL failed")

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=5)
        self._stopped = False

    def restart(self) -> None:
        """Kill (if running) and start again on the same port, empty."""
        self.kill()
        self.start()

    def stop_signal(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)
        self._stopped = True

    def cont_signal(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self._stopped = False

    def ensure_healthy(self) -> None:
        """Undo whatever a previous test did: continue or restart, then wait for PING."""
        if self._stopped and self.running:
            self.cont_signal()
        if not self.running:
            self.start()
        self.wait_ready()

    def close(self) -> None:
        """End the process this object started (by PID) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if self._stopped:
                os.kill(process.pid, signal.SIGCONT)
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _encode(args: Sequence[str]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip(f"{REDIS_SERVER} is not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> Iterator[RedisServer]:
    """The session's server, running and empty."""
    redis_server_session.ensure_healthy()
    redis_server_session.flushall()
    yield redis_server_session
    if redis_server_session._stopped:
        redis_server_session.cont_signal()
