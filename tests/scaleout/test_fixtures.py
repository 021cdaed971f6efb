"""The topology fixtures themselves (their failovers are exercised by tests/scaleout/*).

A cluster whose 3 primaries serve every slot; sentinels that agree on one master."""

from __future__ import annotations

import redis

from tests.fixtures_topologies import STARTUP_SECONDS, RedisClusterSet, SentinelSet


def test_cluster_has_three_primaries_each_with_a_replica(redis_cluster: RedisClusterSet):
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    owners = {redis_cluster.primary_for_slot(slot).port for slot in (0, 8000, 16383)}
    assert len(owners) == 3
    assert all(node.port + 10000 < 65536 and node.port < 45535 for node in redis_cluster.nodes)
    print(f"fixture start-up: {STARTUP_SECONDS}")


def test_sentinels_agree_on_a_master_with_one_replica(redis_sentinel: SentinelSet):
    master, replica = redis_sentinel.master(), redis_sentinel.replica()
    assert master is not replica
    with redis.Redis(port=replica.port, protocol=2) as client:
        assert client.info("replication")["role"] == "slave"
    print(f"fixture start-up: {STARTUP_SECONDS}")
