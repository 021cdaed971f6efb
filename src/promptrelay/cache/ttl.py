"""TTL policy by content type, as data.

policy = TtlPolicy.from_settings(settings)
policy.ttl_for("claude_response")   # 1800.0 unless CACHE_TTL_CLAUDE_RESPONSE says otherwise
policy.ttl_for("anything_else")     # CACHE_TTL
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from promptrelay.cache.base import ContentType

if TYPE_CHECKING:
    from promptrelay.settings import Settings

__all__ = ["DEFAULT_TTLS", "TtlPolicy"]

DEFAULT_TTLS: Mapping[str, float] = MappingProxyType(
    {
        ContentType.CLAUDE_RESPONSE: 1800.0,
        ContentType.TEMPLATE_CONTENT: 3600.0,
        ContentType.PROVIDER_CONFIG: 7200.0,
        ContentType.METRICS: 60.0,
    }
)


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    """Seconds to keep an entry, by content type; ``default`` for unlisted types."""

    default: float = 3600.0
    by_type: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TTLS)

    def __post_init__(self) -> None:
        if self.default <= 0 or any(ttl <= 0 for ttl in self.by_type.values()):
            raise ValueError("TTLs must be positive")
        frozen = MappingProxyType({str(name): float(ttl) for name, ttl in self.by_type.items()})
        object.__setattr__(self, "by_type", frozen)

    @classmethod
    def from_settings(cls, settings: Settings) -> TtlPolicy:
        by_type = {
            ContentType.CLAUDE_RESPONSE: settings.cache_ttl_claude_response,
            ContentType.TEMPLATE_CONTENT: settings.cache_ttl_template_content,
            ContentType.PROVIDER_CONFIG: settings.cache_ttl_provider_config,
            ContentType.METRICS: settings.cache_ttl_metrics,
        }
        return cls(
            default=float(settings.cache_ttl), by_type={k: float(v) for k, v in by_type.items()}
        )

    def ttl_for(self, content_type: str) -> float:
        return self.by_type.get(content_type, self.default)
