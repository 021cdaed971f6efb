"""All configuration, read once from the environment.

This is the only module that reads the environment. `load_settings()` builds one
validated `Settings`; everything else receives it (or the parts it needs) as an
argument. A bad value raises `ConfigError` whose message names the variable.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from promptrelay.core.keyfile import load_keys_file

__all__ = ["ConfigError", "Settings", "is_loopback_host", "load_settings"]

DEFAULT_MODEL = "claude-sonnet-4-6"

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class ConfigError(Exception):
    """Configuration is invalid; the message names each offending variable."""


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every setting, with the specification's defaults (docs/configuration.md).

    Field names are the environment variable names, lower-cased.
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # Where the service listens.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: PositiveInt = 1
    shutdown_grace: Annotated[float, Field(ge=0)] = 30.0
    log_level: str = "info"

    # Upstream.
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    max_sockets: PositiveInt = 50
    max_free_sockets: NonNegativeInt = 10
    upstream_keepalive: PositiveFloat = 15.0
    upstream_timeout: PositiveFloat = 600.0
    upstream_connect_timeout: PositiveFloat = 10.0
    upstream_read_timeout: PositiveFloat = 300.0
    upstream_retries: NonNegativeInt = 2
    retry_max_wait: Annotated[float, Field(ge=0)] = 60.0

    # Governor (docs/limits.md): pace requests by the upstream's rate-limit headers.
    governor_enabled: bool = True
    governor_initial_concurrency: PositiveInt = 4
    governor_max_queue: PositiveInt = 1000
    governor_max_wait: PositiveFloat = 60.0  # used as min(this, UPSTREAM_TIMEOUT)

    # Cache.
    redis_enabled: bool = False
    redis_url: SecretStr | None = None
    redis_host: str = "localhost"
    redis_port: Annotated[int, Field(gt=0, le=65535)] = 6379
    redis_password: SecretStr | None = None
    redis_username: str | None = None
    redis_tls: bool = False
    redis_cluster_nodes: Annotated[tuple[str, ...], NoDecode] = ()
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = ()
    redis_sentinel_master: str | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_socket_timeout: PositiveFloat = 0.2
    redis_connect_timeout: PositiveFloat = 0.2
    redis_max_connections: PositiveInt = 32
    cache_ttl: PositiveInt = 3600
    cache_ttl_claude_response: PositiveInt = 1800
    cache_ttl_template_content: PositiveInt = 3600
    cache_ttl_provider_config: PositiveInt = 7200
    cache_ttl_metrics: PositiveInt = 60
    memory_cache_max_bytes: PositiveInt = 64 * 1024 * 1024
    cache_max_entry_bytes: PositiveInt = 4 * 1024 * 1024

    # Batching.
    batch_max_size: PositiveInt = 10
    batch_window_ms: PositiveInt = 100
    batch_max_concurrency: PositiveInt = 20  # cap of a batch call's `concurrency`
    batch_max_items: PositiveInt = 100  # items per POST /api/generate/batch
    batch_jobs_max: PositiveInt = 1000  # async batch jobs remembered in memory
    batch_jobs_max_bytes: PositiveInt = 64 * 1024 * 1024  # all async jobs' bodies + results
    batch_jobs_ttl: PositiveInt = 172800  # seconds an async job is kept in Redis
    batch_job_max_bytes: PositiveInt = 16 * 1024 * 1024  # one async job's record in Redis

    # Circuit breaker.
    circuit_failure_threshold: PositiveInt = 5
    circuit_reset_timeout: PositiveFloat = 60.0
    circuit_window: PositiveFloat = 300.0
    # The half-open probe counts as failed without a status line and headers by then.
    circuit_probe_timeout: PositiveFloat = 60.0
    # Seconds the shared probe lock is held for at a time (renewed while the probe runs).
    circuit_probe_lease: PositiveFloat = 5.0

    # Memory guard and alerts.
    gc_threshold: Fraction = 0.7
    memory_threshold: Fraction = 0.8
    memory_limit_bytes: PositiveInt | None = None
    alert_webhook_url: str | None = None

    # Telemetry (README, "Telemetry").
    telemetry_enabled: bool = True
    telemetry_interval: PositiveFloat = 5.0
    gc_critical_threshold: Fraction = 0.9
    gc_min_interval: PositiveFloat = 30.0
    # Allocations between young collections in a `serve` process (0: Python's 700).
    gc_young_threshold: NonNegativeInt = 10_000
    alert_cooldown: Annotated[float, Field(ge=0)] = 60.0
    alert_escalate_after: PositiveInt = 3
    alert_error_rate: Fraction = 0.1
    alert_error_window: PositiveFloat = 60.0
    alert_min_requests: PositiveInt = 10
    alert_cpu_percent: PositiveFloat = 90.0
    alert_slow_seconds: PositiveFloat = 5.0
    alert_loop_lag_ms: PositiveFloat = 100.0
    prometheus_multiproc_dir: str | None = None

    # Access.
    admin_api_key: SecretStr | None = None
    metrics_token: SecretStr | None = None  # set: GET /metrics needs it as a Bearer token
    promptrelay_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    keys_file: str | None = None  # YAML of client keys with quotas (core/keyfile.py)
    allow_open_access: bool = False
    admin_hosts: Annotated[tuple[str, ...], NoDecode] = ()  # Host names admin writes accept
    dashboard_refresh: Annotated[float, Field(ge=0.2, le=60)] = 3.0
    max_body_bytes: PositiveInt = 32 * 1024 * 1024

    # Client connections (docs/hardening.md).
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024  # request line + headers
    head_timeout: PositiveFloat = 30.0  # the whole request head, from its first byte
    body_idle_timeout: PositiveFloat = 30.0  # longest silence between body chunks
    max_connections: PositiveInt | None = None  # None: derived from RLIMIT_NOFILE

    # Requests.
    default_model: str = DEFAULT_MODEL
    # docs/limits.md: a prompt-cache breakpoint after every long system prompt (the one
    # change promptrelay makes to a request it forwards; off by default).
    prompt_cache_auto: bool = False
    default_max_tokens: PositiveInt = 1024
    responses_store_ttl: PositiveInt = 3600  # s a stored /v1/responses answer stays readable

    # Later features.
    database_url: str = "sqlite:///promptrelay.db"
    providers_file: str | None = None

    # Templates.
    templates_dir: str | None = None
    template_max_steps: PositiveInt = 200_000
    template_max_output_bytes: PositiveInt = 1024 * 1024

    @field_validator("promptrelay_api_keys", "admin_hosts", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("redis_cluster_nodes", "redis_sentinels", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("redis_cluster_nodes", "redis_sentinels")
    @classmethod
    def _check_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port (write host:port,host:port)")
        return value

    @field_validator("keys_file")
    @classmethod
    def _check_keys_file(cls, value: str | None) -> str | None:
        if value:
            load_keys_file(value)  # KeysFileError (a ValueError) names the file and field
        return value or None

    @field_validator("anthropic_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://api.anthropic.com")
        if parts.query or parts.fragment or "?" in value or "#" in value:
            raise ValueError("must have no query or fragment; a path prefix is fine")
        if "%" in parts.path or {".", ".."} & set(parts.path.split("/")):
            raise ValueError("its path prefix must have no '.', '..' or %-escapes")
        return value.rstrip("/")

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.lower()
        if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > 10:
            return value
        if scheme in ("postgresql", "postgres") and urlsplit(value).hostname:
            return value
        raise ValueError("use sqlite:///file.db or postgresql://user:password@host:port/db")

    @field_validator(
        "anthropic_api_key",
        "admin_api_key",
        "metrics_token",
        "redis_password",
        "redis_url",
        "redis_sentinel_password",
    )
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _check_open_access(self) -> Settings:
        if (
            not self.promptrelay_api_keys
            and not self.keys_file
            and not self.allow_open_access
            and not is_loopback_host(self.host)
        ):
            raise ValueError(
                f"HOST={self.host} is not a loopback address and PROMPTRELAY_API_KEYS is unset: "
                "anyone who can reach the gateway would spend its Anthropic key. "
                "Set PROMPTRELAY_API_KEYS, or ALLOW_OPEN_ACCESS=true to accept that."
            )
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER (the monitored name)")
        if self.max_free_sockets > self.max_sockets:
            raise ValueError("MAX_FREE_SOCKETS must not exceed MAX_SOCKETS")
        return self

    @property
    def offline(self) -> bool:
        """No gateway key: the offline provider answers unless a client brings its own key."""
        return self.anthropic_api_key is None

    @property
    def redis_topology(self) -> str:
        """``cluster``, ``sentinel`` or ``single``: which kind of Redis the tier talks to."""
        if self.redis_cluster_nodes:
            return "cluster"
        if self.redis_sentinels:
            return "sentinel"
        return "single"

    @property
    def governor_wait(self) -> float:
        """GOVERNOR_MAX_WAIT, never above UPSTREAM_TIMEOUT."""
        return min(self.governor_max_wait, self.upstream_timeout)

    def redis_location(self) -> str:
        """The single Redis's URL, built from REDIS_HOST/PORT (and REDIS_TLS) when REDIS_URL
        is unset."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        scheme = "rediss" if self.redis_tls else "redis"
        return f"{scheme}://{self.redis_host}:{self.redis_port}/0"


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if name else message)
    return "invalid configuration: " + "; ".join(lines)


# Each Redis topology and the variables that choose it.
_TOPOLOGY_VARIABLES = {
    "single": ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"),
    "cluster": ("REDIS_CLUSTER_NODES",),
    "sentinel": ("REDIS_SENTINELS",),
}


def _check_one_topology(overrides: dict[str, Any]) -> None:
    """At most one Redis topology may be configured explicitly (environment or CLI).

    Settings built in code pick cluster, then sentinel, then single; only what an operator
    wrote is checked, since two written topologies mean a mistake in a deployment.
    """
    given = {name.upper() for name, value in os.environ.items() if value.strip()}
    given |= {name.upper() for name, value in overrides.items() if value is not None}
    chosen = {
        topology: [name for name in names if name in given]
        for topology, names in _TOPOLOGY_VARIABLES.items()
    }
    named = [" and ".join(names) for names in chosen.values() if names]
    if len(named) > 1:
        raise ConfigError(
            "invalid configuration: more than one Redis topology is set ("
            + "; ".join(named)
            + "): configure a single Redis, a Cluster or a Sentinel set, not several"
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (plus explicit overrides, e.g. from CLI flags) once."""
    _check_one_topology(overrides)
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def export_overrides(overrides: dict[str, Any]) -> None:
    """Put CLI overrides into the environment, for worker processes that re-read it."""
    for name, value in overrides.items():
        os.environ[name.upper()] = str(value)
