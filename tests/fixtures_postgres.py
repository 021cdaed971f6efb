"""Fixtures: a throwaway PostgreSQL cluster on a free port.

``postgres_server`` gives each test a running cluster with the template tables dropped.
The cluster is created once per session (initdb into a temp dir, then the ``postgres``
binary started directly, so this session owns its PID) and always ended, by PID, at
teardown. It listens on 127.0.0.1 only and on a Unix socket inside its own directory;
the machine's own PostgreSQL (port 5432) is never touched.

initdb refuses to run as root: when the tests run as root, the cluster's directory is
given to the ``postgres`` user (or ``nobody``) and initdb/postgres run as that user.

    def test_x(postgres_server):
        postgres_server.url    # postgresql://promptrelay@127.0.0.1:<port>/postgres
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.fixtures_redis import free_port

__all__ = ["PostgresServer", "find_bindir", "postgres_server", "postgres_server_session"]

_FORBIDDEN_PORT = 5432  # the machine's own PostgreSQL
_USER = "promptrelay"


def find_bindir() -> str | None:
    """Where initdb and postgres live: `pg_config --bindir`, else the newest Debian dir."""
    candidates = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass

    def major(path: str) -> float:
        try:
            return float(path.split("/")[-3])
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)
    for bindir in candidates:
        if os.access(os.path.join(bindir, "initdb"), os.X_OK) and os.access(
            os.path.join(bindir, "postgres"), os.X_OK
        ):
            return bindir
    return None


def _run_as() -> str | None:
    """A non-root user for initdb when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no postgres/nobody user to run initdb as")


class PostgresServer:
    """One PostgreSQL cluster that this test session created and owns."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = free_port()
        while self.port == _FORBIDDEN_PORT:
            self.port = free_port()
        self.user = _run_as()
        self._dir = tempfile.mkdtemp(prefix="promptrelay-pg-")
        self.data = os.path.join(self._dir, "data")
        self._process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("postgres is not running")
        return self._process.pid

    def _binary(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def start(self, timeout: float = 30.0) -> None:
        log = os.path.join(self._dir, "initdb.log")
        with open(log, "wb") as out:
            subprocess.run(
                [self._binary("initdb"), "-D", self.data, "-U", _USER, "--auth=trust",
                 "-E", "UTF8", "--no-sync", "--no-instructions"],
                stdout=out, stderr=subprocess.STDOUT, check=True, user=self.user,
                timeout=timeout, cwd=self._dir,
            )  # fmt: skip
        self._process = subprocess.Popen(
            [self._binary("postgres"), "-D", self.data, "-p", str(self.port),
             "-k", self._dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=40", "-c", "shared_buffers=16MB"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self.user,
            cwd=self._dir,
        )  # fmt: skip
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = [self._binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._process.returncode}")
            if subprocess.run(ready, check=False, timeout=5).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres on port {self.port} did not become ready")
            time.sleep(0.05)

    def close(self) -> None:
        """End the postmaster this object started (by PID) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGINT)  # "fast" shutdown
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGQUIT)
                process.wait(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def postgres_server_session() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries are missing: sudo apt-get install postgresql")
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture
async def postgres_server(postgres_server_session: PostgresServer) -> PostgresServer:
    """The session's cluster, with the template tables dropped."""
    import asyncpg

    conn = await asyncpg.connect(postgres_server_session.url)
    try:
        await conn.execute("DROP TABLE IF EXISTS template_heads, template_versions")
    finally:
        await conn.close()
    return postgres_server_session
