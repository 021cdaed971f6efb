"""What one real Redis server executes, through its MONITOR feed (no mock anywhere).

    with CommandLog(port, password) as log:
        ...                                   # the traffic under test
    log.touching("promptrelay:breaker:")      # the commands that named such a key

MONITOR lists every command the server runs, those inside Lua scripts included. The
feed is read in a thread; leaving the block sends an ECHO with a random marker, and the
log ends at that marker, so every command sent before it is in the log.
"""

from __future__ import annotations

import secrets
import threading
from types import TracebackType
from typing import Any

import redis

__all__ = ["CommandLog", "breaker_resynced"]


def breaker_resynced(gateway: Any) -> bool:
    """Has this in-thread gateway's shared breaker read its state after subscribing?
    (That one read happens in the background; a count of commands starts after it.)"""
    return int(gateway.app.runtime.breaker._shared.resyncs) >= 1


class CommandLog:
    def __init__(self, port: int, password: str | None = None) -> None:
        assert port != 6379, "never the machine's own Redis"
        self._port, self._password = port, password
        self._marker = f"command-log-end-{secrets.token_hex(4)}"
        self.commands: list[str] = []
        self._client = self._connect(decode=True)
        self._monitor = self._client.monitor()  # type: ignore[no-untyped-call]  # untyped
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> CommandLog:
        self._monitor.__enter__()  # MONITOR answered: from here on, every command is fed
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self._connect(decode=False) as client:
            client.echo(self._marker)
        self._thread.join(timeout=10)
        self._monitor.__exit__(kind, error, traceback)
        self._client.close()

    def _connect(self, *, decode: bool) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self._port,
            password=self._password,
            protocol=2,
            decode_responses=decode,
        )

    def touching(self, text: str) -> list[str]:
        return [command for command in self.commands if text in command]

    def _read(self) -> None:
        while True:
            command = str(self._monitor.next_command()["command"])
            if self._marker in command:
                return
            self.commands.append(command)
