"""Fixtures: a real fake-Anthropic server over HTTP.

`fake_upstream` gives each test its own started `FakeUpstreamThread` on a free loopback
port (fresh counters, default knobs), stopped after the test. It runs on its own event
loop in a thread, so sync and async tests use it the same way:

    async def test_retries_overloaded(fake_upstream):
        fake_upstream.configure(fail_next=1, fail_next_status=529, retry_after=0)
        settings = Settings(anthropic_base_url=fake_upstream.url, ...)
        ...
        assert fake_upstream.stats()["by_path"]["/v1/messages"] == 2

Send an `x-api-key` header on /v1 requests (the fake answers 401 without one). Knobs:
`promptrelay.devtools.fake_config.FakeConfig`; stats keys: `FakeUpstream.stats`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promptrelay.devtools.fake import FakeUpstreamThread

__all__ = ["fake_upstream"]


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstreamThread]:
    with FakeUpstreamThread() as fake:
        yield fake
