"""Fixtures shared by the breaker tests: a fake clock and the shared store it drives."""

from __future__ import annotations

import pytest

from tests.resilience.fakes import FakeClock, SharedStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> SharedStore:
    return SharedStore(clock)
