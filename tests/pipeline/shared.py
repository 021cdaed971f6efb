"""A promptrelay on the fake upstream and a shared Redis, as the pipeline tests start it."""

from __future__ import annotations

from typing import Any

__all__ = ["shared_gateway"]


def shared_gateway(gateway_factory: Any, fake_url: str, redis_url: str, **overrides: Any) -> Any:
    """A gateway with its own key, no retries, and the cache shared through `redis_url`."""
    return gateway_factory(
        anthropic_api_key="gw",
        anthropic_base_url=fake_url,
        upstream_retries=0,
        redis_enabled=True,
        redis_url=redis_url,
        **overrides,
    )
