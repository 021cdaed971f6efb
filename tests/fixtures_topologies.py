"""Fixtures: a real Redis Cluster (3 primaries + 3 replicas) and a Sentinel set.

Both are built from ``/usr/bin/redis-server`` on free loopback ports, started once per
test session (``redis_cluster_session``, ``redis_sentinel_session``) and ended by PID at
teardown. The per-test fixtures (``redis_cluster``, ``redis_sentinel``) hand out the
session's topology healthy and empty: a test that killed a node has it restarted and
waits until every slot (or the Sentinel master) is served again.

    def test_x(redis_cluster):
        redis_cluster.startup_nodes       # "127.0.0.1:p1,127.0.0.1:p2,..."
        redis_cluster.primaries()         # the RedisServer objects currently primary
        redis_cluster.primary_for_slot(0)
        redis_cluster.kill(server)        # SIGKILL; the per-test fixture restores it
        redis_cluster.wait_replicated()   # every replica has applied its primary's writes

Cluster nodes listen on 20000 up to 10000 below the kernel's ephemeral range (the cluster
bus is port + 10000), so neither port can be taken by some process's outgoing connection
between the check and redis-server's bind; each pick checks that both are free. The
machine's own Redis on 6379 is never touched. ``STARTUP_SECONDS`` records how long each
topology took to start in this session (docs/scale-out.md quotes it).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from tests.fixtures_redis import REDIS_SERVER, RedisServer, free_port

__all__ = [
    "STARTUP_SECONDS",
    "RedisClusterSet",
    "SentinelSet",
    "redis_cluster",
    "redis_cluster_session",
    "redis_sentinel",
    "redis_sentinel_session",
]

REDIS_CLI = "/usr/bin/redis-cli"
_BUS_OFFSET = 10000
_MIN_PORT = 20000


def _max_port() -> int:
    """The highest node port whose bus port stays below the ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(_MIN_PORT + 1000, min(45535, low - _BUS_OFFSET))


_NODE_TIMEOUT_MS = 1000
MASTER_NAME = "promptrelay"
# A replica's first full sync starts at once: by default (diskless sync) the primary
# waits 5 s for more replicas first, and a primary killed meanwhile leaves an empty one.
_SYNC_AT_ONCE = ("--repl-diskless-sync-delay", "0")

STARTUP_SECONDS: dict[str, float] = {}


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free as well, both below
    the ephemeral range."""
    rng = random.Random()
    highest = _max_port()
    for _ in range(1000):
        port = rng.randrange(_MIN_PORT, highest)
        candidates = {port, port + _BUS_OFFSET}
        if candidates & taken or 6379 in candidates:
            continue
        if _bindable(port) and _bindable(port + _BUS_OFFSET):
            taken.update(candidates)
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _client(port: int, password: str | None = None, *, decode: bool = True) -> redis.Redis:
    """A plain RESP2 connection for the fixture's own questions (never 6379)."""
    assert port != 6379
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        protocol=2,
        decode_responses=decode,
        socket_timeout=2.0,
        single_connection_client=True,
    )


def _ask(port: int, *args: str, password: str | None = None) -> Any:
    with _client(port, password) as client:
        return client.execute_command(*args)


def _info(server: RedisServer, *args: str) -> dict[str, str]:
    """A ``key:value`` reply (CLUSTER INFO, INFO replication) as a dict."""
    reply = _ask(server.port, *args, password=server.password)
    if isinstance(reply, dict):  # redis-py parses INFO itself
        return {str(key): str(value) for key, value in reply.items()}
    pairs = (line.split(":", 1) for line in str(reply).splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _wait(predicate: object, what: str, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (OSError, redis.RedisError, LookupError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s")
        time.sleep(0.05)


class RedisClusterSet:
    """Six cluster-enabled redis-server processes joined as 3 primaries + 3 replicas."""

    # Every node requires it, so tests can prove that no credential reaches a key or value.
    password = "cluster-secret-6f1d"

    def __init__(self) -> None:
        taken: set[int] = set()
        args = (
            "--requirepass", self.password,
            "--masterauth", self.password,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(_NODE_TIMEOUT_MS),
            # A lagging replica still takes over: tests kill primaries on purpose.
            "--cluster-replica-validity-factor", "0",
            *_SYNC_AT_ONCE,
        )  # fmt: skip
        self.nodes = [RedisServer(cluster_port(taken), args) for _ in range(6)]

    @property
    def startup_nodes(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                REDIS_CLI, "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", "1", "--cluster-yes",
                "-a", self.password, "--no-auth-warning",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def _healthy(self) -> bool:
        if not all(node.running for node in self.nodes):
            return False
        if any(_info(node, "CLUSTER", "INFO").get("cluster_state") != "ok" for node in self.nodes):
            return False
        primaries = self.primaries()
        replicas = [node for node in self.nodes if node not in primaries]
        # Every primary has its replica back, and every replica finished its full sync
        # (a connected replica may still wait for it; its link is up only once it is done).
        return (
            len(primaries) == 3
            and all(
                _info(node, "INFO", "replication").get("connected_slaves") == "1"
                for node in primaries
            )
            and all(_synced(node) for node in replicas)
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        _wait(self._healthy, "the cluster did not become healthy", timeout)

    def primaries(self) -> list[RedisServer]:
        return [
            node
            for node in self.nodes
            if node.running and _info(node, "INFO", "replication").get("role") == "master"
        ]

    def primary_for_slot(self, slot: int) -> RedisServer:
        """The running primary that CLUSTER NODES (asked of a running node) says owns ``slot``."""
        asked = next(node for node in self.nodes if node.running)
        by_port = {node.port: node for node in self.nodes}
        for line in str(_ask(asked.port, "CLUSTER", "NODES", password=self.password)).splitlines():
            fields = line.split()
            if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return by_port[port]
        raise LookupError(f"no primary serves slot {slot}")

    def kill(self, node: RedisServer) -> None:
        node.kill()

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Until every primary's replica has applied all that the primary had written when
        this was called (replication offsets), so a kill after it loses no write."""
        targets = {
            node.port: int(_info(node, "INFO", "replication")["master_repl_offset"])
            for node in self.primaries()
        }

        def caught_up() -> bool:
            applied: dict[int, int] = {}
            for node in self.nodes:
                info = _info(node, "INFO", "replication") if node.running else {}
                if info.get("role") == "slave" and info.get("master_link_status") == "up":
                    applied[int(info["master_port"])] = int(info["slave_repl_offset"])
            return all(applied.get(port, -1) >= offset for port, offset in targets.items())

        _wait(caught_up, "the replicas did not catch up", timeout)

    def wait_promoted(self, killed: RedisServer, timeout: float = 30.0) -> None:
        """Until the other nodes agree that every slot is served again without ``killed``."""
        alive = [node for node in self.nodes if node is not killed]
        _wait(
            lambda: (
                len([n for n in alive if _info(n, "INFO", "replication").get("role") == "master"])
                == 3
                and all(_info(n, "CLUSTER", "INFO").get("cluster_state") == "ok" for n in alive)
            ),
            "no replica was promoted",
            timeout,
        )

    def restore(self) -> None:
        """Restart any killed node (it rejoins from its nodes.conf) and wait until healthy."""
        for node in self.nodes:
            if node._stopped and node.running:
                node.cont_signal()
            if not node.running:
                node.start()
        self.wait_healthy()

    def flushall(self) -> None:
        for node in self.primaries():
            node.flushall()

    def keys_by_primary(self, pattern: str = "*") -> dict[int, list[str]]:
        """Every key matching ``pattern`` on each primary (by port)."""
        found: dict[int, list[str]] = {}
        for node in self.primaries():
            with _client(node.port, self.password) as client:
                found[node.port] = list(client.scan_iter(match=pattern, count=1000))
        return found

    def dump_all(self) -> list[tuple[str, bytes]]:
        """Every key and its raw value on every running node (primaries and replicas)."""
        running = [node for node in self.nodes if node.running]
        return [item for node in running for item in _dump(node.port, self.password)]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class SentinelSet:
    """One master, one replica and three sentinels watching them as ``MASTER_NAME``."""

    def __init__(self) -> None:
        self.master_name = MASTER_NAME
        self.servers = [RedisServer(extra_args=_SYNC_AT_ONCE)]
        self.servers.append(RedisServer(extra_args=_replica_of(self.servers[0])))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._dir = tempfile.mkdtemp(prefix="promptrelay-sentinel-")
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for port in self.sentinel_ports:
            self._sentinels.append(self._start_sentinel(port))
        self.wait_healthy()

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        conf = os.path.join(self._dir, f"sentinel-{port}.conf")
        master_port = self.servers[0].port
        with open(conf, "w") as handle:
            handle.write(
                f"port {port}\nbind 127.0.0.1\ndir {self._dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 3000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
        return subprocess.Popen(
            [REDIS_SERVER, conf, "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def master(self) -> RedisServer:
        """The server every sentinel names as master right now."""
        answers = {
            tuple(_ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME))
            for port in self.sentinel_ports
        }
        if len(answers) != 1:
            raise LookupError("the sentinels disagree about the master")
        master_port = int(answers.pop()[1])
        return next(server for server in self.servers if server.port == master_port)

    def replica(self) -> RedisServer:
        master = self.master()
        return next(server for server in self.servers if server is not master)

    def _healthy(self) -> bool:
        if not all(server.running for server in self.servers):
            return False
        if any(process.poll() is not None for process in self._sentinels):
            return False
        master = self.master()
        replication = _info(master, "INFO", "replication")
        if replication.get("role") != "master" or replication.get("connected_slaves") != "1":
            return False
        if not _synced(self.replica()):
            return False
        # Every sentinel knows the other two and the replica: a failover can happen now.
        for port in self.sentinel_ports:
            state = _pairs(_ask(port, "SENTINEL", "MASTER", MASTER_NAME))
            if state.get("num-other-sentinels") != "2" or state.get("num-slaves") != "1":
                return False
            if "down" in state.get("flags", ""):
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        _wait(self._healthy, "the sentinel set did not become healthy", timeout)

    def wait_failover(self, old: RedisServer, timeout: float = 30.0) -> RedisServer:
        _wait(lambda: self.master() is not old, "the sentinels did not fail over", timeout)
        return self.master()

    def restore(self) -> None:
        for server in self.servers:
            if server._stopped and server.running:
                server.cont_signal()
        dead = [server for server in self.servers if not server.running]
        if dead:
            master = self.master() if len(dead) < len(self.servers) else self.servers[0]
            for server in dead:
                # Back as the current master's replica at once, rather than waiting for the
                # sentinels to notice it and reconfigure it (several seconds).
                if server is not master:
                    server.extra_args = _replica_of(master)
                server.start()
        self.wait_healthy()

    def flushall(self) -> None:
        self.master().flushall()

    def close(self) -> None:
        for process in self._sentinels:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        for server in self.servers:
            server.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _replica_of(master: RedisServer) -> tuple[str, ...]:
    return (*_SYNC_AT_ONCE, "--replicaof", "127.0.0.1", str(master.port))


def _synced(replica: RedisServer) -> bool:
    """The replica finished its full sync and follows its primary's stream."""
    return _info(replica, "INFO", "replication").get("master_link_status") == "up"


def _pairs(reply: list[str]) -> dict[str, str]:
    """A flat RESP2 array of name, value, name, value (SENTINEL MASTER) as a dict."""
    return dict(zip(reply[0::2], reply[1::2], strict=True))


def _dump(port: int, password: str | None) -> list[tuple[str, bytes]]:
    """Every key on one node with its value's bytes, whatever its type (READONLY: replicas)."""
    items: list[tuple[str, bytes]] = []
    with _client(port, password, decode=False) as client:
        if client.info("cluster").get("cluster_enabled"):
            client.execute_command("READONLY")
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                values: list[Any] = [client.get(key)]
            elif kind == b"hash":
                values = [item for pair in client.hgetall(key).items() for item in pair]
            elif kind == b"zset":
                values = list(client.zrange(key, 0, -1))
            elif kind == b"list":
                values = list(client.lrange(key, 0, -1))
            else:
                values = list(client.smembers(key)) if kind == b"set" else [kind]
            items.append((key.decode(errors="replace"), b"\n".join(v or b"" for v in values)))
    return items


def _need_binaries() -> None:
    for binary in (REDIS_SERVER, REDIS_CLI):
        if not os.path.exists(binary):
            pytest.skip(f"{binary} is not installed (make redis-server installs it)")


Topology = TypeVar("Topology", RedisClusterSet, SentinelSet)


def _running(name: str, build: Callable[[], Topology]) -> Iterator[Topology]:
    """A session's topology: started once (its start-up time kept), closed at the end."""
    _need_binaries()
    topology = build()
    try:
        began = time.monotonic()
        topology.start()
        STARTUP_SECONDS[name] = time.monotonic() - began
        yield topology
    finally:
        topology.close()


def _whole_and_empty(topology: Topology) -> Iterator[Topology]:
    """Every node back, every key gone; every node back again after the test."""
    topology.restore()
    topology.flushall()
    yield topology
    topology.restore()


@pytest.fixture(scope="session")
def redis_cluster_session() -> Iterator[RedisClusterSet]:
    yield from _running("cluster", RedisClusterSet)


@pytest.fixture
def redis_cluster(redis_cluster_session: RedisClusterSet) -> Iterator[RedisClusterSet]:
    """The session's cluster, every node running, every slot served, every key gone."""
    yield from _whole_and_empty(redis_cluster_session)


@pytest.fixture(scope="session")
def redis_sentinel_session() -> Iterator[SentinelSet]:
    yield from _running("sentinel", SentinelSet)


@pytest.fixture
def redis_sentinel(redis_sentinel_session: SentinelSet) -> Iterator[SentinelSet]:
    """The session's sentinel set with its master, replica and sentinels all up, empty."""
    yield from _whole_and_empty(redis_sentinel_session)
