"""Instructions per request, counted by valgrind's callgrind: a cost that machine noise
cannot move.

A server runs under `valgrind --tool=callgrind` (about 50 times slower, which does not
matter: instructions are counted, not timed). After a warm-up, `callgrind_control -z`
zeroes the counters, wrk drives the server for a while, `callgrind_control -d` dumps
them, and the dump's total divided by wrk's request count is the cost of one request in
user-space instructions (system calls run in the kernel and are not counted). The same
binary, inputs and settings give the same count whatever else the machine runs.

    with CallgrindServer(service, workdir) as server:   # starts it under valgrind
        server.zero()
        ... drive it ...
        instructions = server.dump()

vgdb, which callgrind_control talks through, names its pipes after LOGNAME/USER and
HOST/HOSTNAME from the environment, so callgrind_control gets the server's environment.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from benchkit import Service

__all__ = ["CallgrindServer", "callgrind_available"]

_START_TIMEOUT = 300.0  # seconds: Python's start-up under valgrind takes 30-60 s here


def callgrind_available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


class CallgrindServer:
    def __init__(
        self, service: Service, workdir: Path, start_timeout: float = _START_TIMEOUT
    ) -> None:
        self.service = service
        self._start_timeout = start_timeout
        self._out = workdir / f"callgrind.{service.name.replace(' ', '-')}"
        service.argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={self._out}.%p",
            *service.argv,
        ]
        self._dumps = 0

    def __enter__(self) -> CallgrindServer:
        self.service.start(timeout=self._start_timeout)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.service.stop()

    def zero(self) -> None:
        self._control("--zero")

    def dump(self) -> int:
        """Instructions executed since the last zero()."""
        self._control("--dump")
        self._dumps += 1
        path = self.last_dump
        for line in path.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
        raise RuntimeError(f"no summary line in {path}")

    @property
    def last_dump(self) -> Path:
        """The file of the last dump()."""
        return Path(f"{self._out}.{self.service.pid}.{self._dumps}")

    def _control(self, action: str) -> None:
        done = subprocess.run(
            ["callgrind_control", action, str(self.service.pid)],
            env=self.service.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or "OK" not in done.stdout:
            raise RuntimeError(f"callgrind_control {action} failed:\n{done.stdout}{done.stderr}")
