"""Who is calling, and which key goes upstream for them.

Rules (README, "Keys"):
- PROMPTRELAY_API_KEYS set: the caller must present one of them (x-api-key or
  Authorization: Bearer); compared in constant time. The gateway's ANTHROPIC_API_KEY goes
  upstream (offline provider when it is unset). Namespace: a hash of the client key.
- unset, ANTHROPIC_API_KEY set: no client key needed; the gateway's key goes upstream.
- unset, ANTHROPIC_API_KEY unset, client sends a key: pass-through, the client's own
  Anthropic key goes upstream for this request only. Namespace: a hash of that key.
- nothing anywhere: the offline provider answers.
- KEYS_FILE keys are client keys like PROMPTRELAY_API_KEYS (either list admits), with
  quotas: their Credentials carry the entry (`tenant`); a plain key and its key_sha256
  get the same namespace. `reload` swaps the file's keys and forgets every cached
  acceptance, so a removed key is refused on its next request.

Keys never leave this module except as the upstream header value; namespaces are hashes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from promptrelay.core.keyfile import KeyEntry, key_digest, load_keys_file
from promptrelay.errors import Unauthorized
from promptrelay.settings import Settings

__all__ = ["Credentials", "KeyMode", "KeyResolver", "client_key"]


class KeyMode(StrEnum):
    GATEWAY = "gateway_key"
    CLIENT = "client_key"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Credentials:
    mode: KeyMode
    upstream_key: str | None  # None only in OFFLINE mode
    namespace: str
    tenant: KeyEntry | None = None  # the KEYS_FILE entry that admitted the caller

    def __repr__(self) -> str:  # never print the key
        return f"Credentials(mode={self.mode.value}, namespace={self.namespace})"


def client_key(headers: Mapping[bytes, bytes]) -> str | None:
    """The key a client sent, from x-api-key or Authorization: Bearer."""
    value = headers.get(b"x-api-key")
    if value:
        return value.decode("latin-1").strip() or None
    auth = headers.get(b"authorization")
    if auth and auth[:7].lower() == b"bearer ":
        return auth[7:].decode("latin-1").strip() or None
    return None


def _namespace(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class KeyResolver:
    def __init__(self, settings: Settings) -> None:
        self._gateway_key = (
            settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
        )
        self._client_keys = [
            key.get_secret_value().encode() for key in settings.promptrelay_api_keys
        ]
        self._cache: dict[str, Credentials] = {}
        self._keys_file = settings.keys_file
        self._required = bool(self._client_keys) or self._keys_file is not None
        self._entries = load_keys_file(settings.keys_file) if settings.keys_file else {}
        self._default = Credentials(
            KeyMode.GATEWAY if self._gateway_key else KeyMode.OFFLINE,
            self._gateway_key,
            "default",
        )

    @property
    def gateway_credentials(self) -> Credentials:
        """The gateway's own: its key (or offline) and the "default" namespace."""
        return self._default

    @property
    def requires_client_key(self) -> bool:
        return self._required

    @property
    def entries(self) -> list[KeyEntry]:
        return list(self._entries.values())

    def reload(self) -> int:
        """Read KEYS_FILE again; raises KeysFileError (the old keys stay) or returns how
        many keys it holds."""
        if self._keys_file is None:
            return 0
        entries = load_keys_file(self._keys_file)
        self._entries, self._cache = entries, {}
        return len(entries)

    def check_client_key(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = presented.encode()
        matched = False
        for key in self._client_keys:  # no early exit: time does not depend on which matched
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def resolve(self, headers: Mapping[bytes, bytes]) -> Credentials:
        if self._required:
            return self._admit(client_key(headers))
        if self._gateway_key is not None:
            return self._default  # a key the client sent is not used: not even read
        presented = client_key(headers)
        if presented is None:
            return self._default
        return Credentials(KeyMode.CLIENT, presented, _namespace(presented))

    def _admit(self, presented: str | None) -> Credentials:
        """A client key where one is required (PROMPTRELAY_API_KEYS or KEYS_FILE)."""
        if presented is None:
            raise Unauthorized("missing API key: send x-api-key or Authorization: Bearer")
        cached = self._cache.get(presented)
        if cached is not None:
            return cached
        entry = self._entries.get(key_digest(presented)) if self._entries else None
        if entry is None and not self.check_client_key(presented):
            raise Unauthorized("invalid API key")
        namespace = entry.namespace if entry is not None else _namespace(presented)
        creds = Credentials(self._default.mode, self._gateway_key, namespace, entry)
        if len(self._cache) < 10_000:
            self._cache[presented] = creds
        return creds
