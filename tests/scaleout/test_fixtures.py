"""The topology fixtures themselves: the cluster serves every slot, Sentinel fails over."""

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


def test_killed_primary_is_replaced_then_restored(redis_cluster: RedisClusterSet):
    victim = redis_cluster.primary_for_slot(0)
    redis_cluster.kill(victim)
    redis_cluster.wait_promoted(victim)
    assert redis_cluster.primary_for_slot(0) is not victim
    redis_cluster.restore()
    assert victim.running and len(redis_cluster.primaries()) == 3


def test_sentinel_fails_over_when_the_master_dies(redis_sentinel: SentinelSet):
    old = redis_sentinel.master()
    with redis.Redis(port=old.port, protocol=2) as client:
        client.set("before", "1")
    old.kill()
    new = redis_sentinel.wait_failover(old)
    assert new is not old
    redis_sentinel.restore()
    assert redis_sentinel.replica() is old
    print(f"fixture start-up: {STARTUP_SECONDS}")
