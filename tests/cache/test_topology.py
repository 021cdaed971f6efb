"""RedisTopology: one builder per topology; no credential in what may be logged."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from promptrelay.cache.topology import RedisTopology
from promptrelay.settings import Settings


async def test_each_topology_builds_its_client_and_names_no_secret():
    common: dict[str, Any] = {
        "redis_password": "top-secret",
        "redis_sentinel_password": "sentinel-secret",
    }
    variants: dict[str, dict[str, Any]] = {
        "single": {"redis_url": "redis://:top-secret@h:6390/0"},
        "cluster": {"redis_cluster_nodes": "a:7000,b:7001"},
        "sentinel": {"redis_sentinels": "s:26379", "redis_sentinel_master": "primary"},
    }
    cases = {kind: Settings(**common, **extra) for kind, extra in variants.items()}
    for kind, settings in cases.items():
        topology = RedisTopology.from_settings(settings)
        assert topology.kind == kind
        client = topology.client()
        try:
            for shown in (topology.location, repr(topology)):
                assert "secret" not in shown, shown
            if kind == "cluster":
                assert isinstance(client, RedisCluster)
                assert topology.location == "cluster://a:7000,b:7001"
            elif kind == "sentinel":
                assert isinstance(client, Redis)
                assert isinstance(client.connection_pool, SentinelConnectionPool)
                assert topology.location == "sentinel://s:26379/primary"
            else:
                assert isinstance(client, Redis)
                assert topology.location == "redis://h:6390/0"
        finally:
            await topology.close(client)


async def test_tls_and_username_reach_the_connections():
    options: dict[str, Any] = {"redis_host": "h", "redis_tls": True, "redis_username": "gateway"}
    settings = Settings(**options)
    topology = RedisTopology.from_settings(settings)
    client = topology.client()
    try:
        assert isinstance(client, Redis)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["username"] == "gateway"
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    finally:
        await topology.close(client)
