"""The one place that builds redis-py clients for the configured Redis topology.

    topology = RedisTopology.from_settings(settings)
    client = topology.client()          # commands: a pooled Redis, RedisCluster or master_for
    subscriber = topology.subscriber()  # pub/sub: its own small pool
    await topology.ping(client)
    position, keys = await topology.scan(client, position, "pr:*", count=500)

Three topologies, chosen in ``settings.py``:

    single    REDIS_URL or REDIS_HOST/PORT   BlockingConnectionPool; SCAN walks one keyspace
    cluster   REDIS_CLUSTER_NODES            redis.asyncio.RedisCluster; SCAN walks every
                                             primary in turn; pub/sub through its
                                             ClusterPubSub (a plain PUBLISH reaches every
                                             node, so a subscriber on any node hears it)
    sentinel  REDIS_SENTINELS + _MASTER      Sentinel(...).master_for(...): every new
                                             connection asks the sentinels for the master,
                                             so a failover is followed on reconnect

REDIS_PASSWORD, REDIS_USERNAME and REDIS_TLS apply to all three (REDIS_SENTINEL_PASSWORD
to the sentinels themselves). redis-py's own retries are off everywhere except one retry
inside the cluster client, which is how it follows a MOVED after a failover. Only the
location (never a password) leaves this module: ``location`` is what logs may name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    from promptrelay.settings import Settings

__all__ = ["RedisClient", "RedisTopology", "ScanPosition", "redact_url"]

RedisClient = Redis | RedisCluster
# (index of the primary being walked, SCAN cursor on it); (0, 0) starts, None is done.
ScanPosition = tuple[int, int]
_SUBSCRIBER_CONNECTIONS = 2


def redact_url(url: str) -> str:
    """``scheme://host:port/db`` without user, password or query string."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<unparseable redis url>"


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True, repr=False)
class RedisTopology:
    """How to reach Redis; builds clients, never holds one. ``repr`` shows no secret."""

    kind: str  # "single" | "cluster" | "sentinel"
    url: str = ""  # single only; may carry a password
    nodes: tuple[tuple[str, int], ...] = ()  # cluster startup nodes or sentinels
    master: str = ""  # sentinel: the monitored master's name
    password: str | None = None
    username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False
    socket_timeout: float = 0.2
    connect_timeout: float = 0.2
    max_connections: int = 32

    @classmethod
    def single(cls, url: str, **options: Any) -> RedisTopology:
        return cls("single", url=url, **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTopology:
        def secret(value: Any) -> str | None:
            return None if value is None else str(value.get_secret_value())

        options: dict[str, Any] = {
            "password": secret(settings.redis_password),
            "username": settings.redis_username,
            "tls": settings.redis_tls,
            "socket_timeout": settings.redis_socket_timeout,
            "connect_timeout": settings.redis_connect_timeout,
            "max_connections": settings.redis_max_connections,
        }
        kind = settings.redis_topology
        if kind == "cluster":
            nodes = tuple(_address(node) for node in settings.redis_cluster_nodes)
            return cls("cluster", nodes=nodes, **options)
        if kind == "sentinel":
            return cls(
                "sentinel",
                nodes=tuple(_address(node) for node in settings.redis_sentinels),
                master=settings.redis_sentinel_master or "",
                sentinel_password=secret(settings.redis_sentinel_password),
                **options,
            )
        return cls.single(settings.redis_location(), **options)

    @property
    def probe_budget(self) -> float:
        """Seconds a PING may take: a cluster or sentinel client discovers its nodes first
        (a topology query, then a connection to each primary)."""
        budget = self.connect_timeout + self.socket_timeout
        return budget if self.kind == "single" else budget + 1.0

    @property
    def location(self) -> str:
        """What logs and stats may name: addresses and the master's name, no credentials."""
        if self.kind == "single":
            return redact_url(self.url)
        addresses = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.kind == "cluster":
            return f"cluster://{addresses}"
        return f"sentinel://{addresses}/{self.master}"

    def __repr__(self) -> str:
        return f"RedisTopology({self.location!r})"

    # -- clients -------------------------------------------------------------------

    def client(self) -> RedisClient:
        """The client for commands, with ``max_connections`` connections (per node)."""
        return self._build(self.max_connections, blocking=True)

    def subscriber(self, name: str | None = None) -> RedisClient:
        """A separate client for the pub/sub connection, so it never waits for a slot;
        ``name`` is its CLIENT SETNAME (so an operator can tell the subscribers apart)."""
        return self._build(_SUBSCRIBER_CONNECTIONS, blocking=False, name=name)

    async def close(self, client: RedisClient) -> None:
        """Close a client built here, and for Sentinel its connections to the sentinels."""
        await client.aclose()
        if isinstance(client, RedisCluster):
            return
        manager = getattr(client.connection_pool, "sentinel_manager", None)
        if isinstance(manager, Sentinel):
            for sentinel in manager.sentinels:
                await sentinel.aclose()

    def _connection_options(self, name: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "driver_info": None,  # no CLIENT SETINFO round trips on connect
        }
        if self.password is not None:
            options["password"] = self.password
        if self.username is not None:
            options["username"] = self.username
        if name is not None:
            options["client_name"] = name
        return options

    def _build(
        self, max_connections: int, *, blocking: bool, name: str | None = None
    ) -> RedisClient:
        options = self._connection_options(name)
        if self.kind == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
                max_connections=max_connections,
                require_full_coverage=False,  # serve the slots that are up during a failover
                retry=Retry(NoBackoff(), 1),
                ssl=self.tls,
                **options,
            )
        if self.kind == "sentinel":
            client: Redis = self._sentinel().master_for(
                self.master,
                redis_class=Redis,
                max_connections=max_connections,
                retry=Retry(NoBackoff(), 0),
                ssl=self.tls,
                **options,
            )
            return client
        return Redis.from_pool(self._single_pool(max_connections, blocking, options))

    def _single_pool(
        self, max_connections: int, blocking: bool, options: dict[str, Any]
    ) -> ConnectionPool:
        url = self.url
        if self.tls and url.startswith("redis://"):
            url = urlunsplit(urlsplit(url)._replace(scheme="rediss"))
        options["retry"] = Retry(NoBackoff(), 0)
        try:
            if blocking:
                # The tier bounds the wait for a connection itself; this timeout is a backstop.
                budget = self.connect_timeout + self.socket_timeout + 0.05
                return BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=budget, **options
                )
            return ConnectionPool.from_url(url, max_connections=max_connections, **options)
        except (ValueError, TypeError):
            # The message may quote the URL, password included.
            raise ValueError(f"invalid Redis URL for {self.location}") from None

    def _sentinel(self) -> Sentinel:
        sentinel_options: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "ssl": self.tls,
        }
        if self.sentinel_password is not None:
            sentinel_options["password"] = self.sentinel_password
        return Sentinel(  # type: ignore[no-untyped-call]  # its __init__ is untyped in redis-py
            list(self.nodes), sentinel_kwargs=sentinel_options
        )

    # -- commands whose shape depends on the topology ------------------------------

    async def ping(self, client: RedisClient) -> None:
        """PING what must answer for the tier to be up: every primary of a cluster."""
        if isinstance(client, RedisCluster):
            await client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await client.ping()

    async def pubsub(self, client: RedisClient) -> PubSub:
        """A pub/sub object for ``client``; on a cluster, on a primary picked at random
        from a freshly read topology (a PUBLISH reaches every node, so any will do, and
        a re-subscription after a failover lands on a node that is up)."""
        if not isinstance(client, RedisCluster):
            return client.pubsub()
        await client.initialize()
        return client.pubsub(node=random.choice(client.get_primaries()))

    async def renew(self, client: RedisClient) -> None:
        """Close the idle pooled connections (every node's, on a cluster)."""
        if isinstance(client, RedisCluster):
            for node in client.get_nodes():
                await node.disconnect()  # a cluster node's pool holds idle connections only
            return
        await client.connection_pool.disconnect(inuse_connections=False)

    async def scan(
        self, client: RedisClient, position: ScanPosition, pattern: str, *, count: int
    ) -> tuple[ScanPosition | None, list[str]]:
        """One SCAN page; a cluster's keyspace is every primary's, walked one after another."""
        index, cursor = position
        if not isinstance(client, RedisCluster):
            cursor, keys = await client.scan(cursor, match=pattern, count=count)
            return (None if cursor == 0 else (0, cursor)), _texts(keys)
        primaries = sorted(client.get_primaries(), key=lambda node: node.name)
        if index >= len(primaries):
            return None, []
        node = primaries[index]
        # With target_nodes the cluster client answers ({node name: cursor}, keys).
        reply: Any = await client.scan(cursor, match=pattern, count=count, target_nodes=node)
        cursors, keys = reply
        cursor = int(cursors[node.name])
        if cursor != 0:
            return (index, cursor), _texts(keys)
        return (None if index + 1 >= len(primaries) else (index + 1, 0)), _texts(keys)


def _texts(keys: list[Any]) -> list[str]:
    return [key if isinstance(key, str) else key.decode("utf-8", "replace") for key in keys]
