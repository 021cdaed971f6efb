"""`promptrelay serve` as a real child process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["free_port", "serve_process"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_process(**env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start `promptrelay serve` with `env` added; yield (process, base URL) once it accepts."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptrelay", "serve"],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # start-up alone, on a busy shared machine
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("promptrelay did not start") from None
                time.sleep(0.05)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()
