"""Alert delivery: the log, and an optional webhook (JSON POST with retries).

With several processes each evaluates its own rules; a notice is delivered by the
process that first claims it, through `claim(key, seconds)` (Redis `SET NX EX` when
Redis is enabled), so one alert reaches the log and the webhook once. A firing or a
resolved notice is claimed by its alert and kind alone: processes that measured the same
condition at different severities (one loop stalled 1.2 s, the others 0.4 s) deliver it
once; an escalation is claimed per severity it reaches.

Webhook body (an n8n Webhook node takes it as is):

    {"source": "promptrelay", "instance": "host:pid", "kind": "firing",
     "key": "error_rate", "severity": "high", "message": "...", "value": 1.0,
     "threshold": 0.1, "at": "2026-11-27T04:00:00+00:00", ...}
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from promptrelay.resilience.backoff import Backoff
from promptrelay.telemetry.alerts import Notice

__all__ = ["AlertDelivery", "Claim"]

log = logging.getLogger("promptrelay.alerts")

Claim = Callable[[str, float], Awaitable[bool]]
_BACKOFF = Backoff(base=0.5, factor=2.0, cap=8.0)  # between webhook attempts: 0.5, 1, 2 s
_LEVELS = {"low": logging.INFO, "medium": logging.WARNING, "high": logging.ERROR}


class AlertDelivery:
    def __init__(
        self,
        webhook_url: str | None,
        *,
        cooldown: float,
        claim: Claim | None = None,
        retries: int = 3,
        backoff: Backoff = _BACKOFF,
        timeout: float = 5.0,
    ) -> None:
        self.webhook_url = webhook_url
        self.cooldown = cooldown
        self.claim = claim
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.delivered = 0
        self.webhook_sent = 0
        self.webhook_failed = 0
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[bool]] = set()

    def submit(self, notice: Notice) -> None:
        """Deliver in the background; the sampler never waits for a webhook."""
        task = asyncio.get_running_loop().create_task(self.deliver(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver(self, notice: Notice) -> bool:
        """False when another process claimed this notice first."""
        if self.claim is not None:
            if not await self.claim(_claim_key(notice), self.cooldown):
                return False
        self.delivered += 1
        level = _LEVELS.get(notice.severity, logging.CRITICAL)
        if notice.kind == "resolved":
            level = logging.INFO
        log.log(
            level, "alert %s %s [%s]: %s", notice.key, notice.kind, notice.severity, notice.message
        )
        if self.webhook_url is not None:
            await self._post(self._payload(notice))
        return True

    def _payload(self, notice: Notice) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return {"source": "promptrelay", "instance": self.instance, "at": now, **notice.as_dict()}

    async def _post(self, payload: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for attempt in range(self.retries + 1):
            try:
                async with self._session.post(self.webhook_url, json=payload) as response:
                    if response.status < 300:
                        self.webhook_sent += 1
                        return
                    reason = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status != 429:
                        break  # the receiver refuses it; retrying will not help
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = type(error).__name__
            if attempt < self.retries:
                await asyncio.sleep(self.backoff.compute(attempt))
        self.webhook_failed += 1
        log.warning("alert webhook failed (%s): %s", reason, payload.get("key"))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def _claim_key(notice: Notice) -> str:
    key = f"promptrelay:alerts:{notice.key}:{notice.kind}"
    return f"{key}:{notice.severity}" if notice.kind == "escalated" else key
