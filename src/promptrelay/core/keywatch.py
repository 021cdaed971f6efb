"""Reload KEYS_FILE when it changes: its modification time, looked at every few seconds.

A reload that fails (a bad file) is logged and the keys loaded before stay in use; the
next change is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from promptrelay.core.auth import KeyResolver
from promptrelay.core.keyfile import KeysFileError

__all__ = ["KeysFileWatcher"]

log = logging.getLogger("promptrelay.keys")


class KeysFileWatcher:
    def __init__(self, keys: KeyResolver, path: str, every: float = 2.0) -> None:
        self._keys, self._path, self._every = keys, path, every
        self._seen = self._stamp()
        self._task: asyncio.Task[None] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def check(self) -> bool:
        """Reload if the file changed since last seen; True when it was reloaded."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        try:
            count = self._keys.reload()
        except KeysFileError as error:
            log.error("%s; the keys loaded before stay in use", error)
            return False
        log.warning("KEYS_FILE reloaded: %d keys", count)
        return True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="keys-file-watcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            self.check()
