"""A request's Cache-Control, as HTTP means it, reduced to what the cache needs.

no-cache     skip the lookup, store the fresh answer
no-store     neither look up nor store
max-age=N    accept a stored answer at most N seconds old
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT", "NO_STORE", "CacheControl", "parse_cache_control"]


@dataclass(frozen=True, slots=True)
class CacheControl:
    lookup: bool = True
    store: bool = True
    max_age: float | None = None

    @property
    def bypass(self) -> bool:
        """The request opted out of the cache entirely (X-Cache: BYPASS)."""
        return not self.lookup and not self.store


DEFAULT = CacheControl()
NO_STORE = CacheControl(lookup=False, store=False)


def parse_cache_control(header: bytes | None) -> CacheControl:
    if not header:
        return DEFAULT
    lookup, store, max_age = True, True, None
    for directive in header.decode("latin-1").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-store":
            lookup = store = False
        elif name == "no-cache":
            lookup = False
        elif name == "max-age":
            try:
                max_age = max(0.0, float(value.strip().strip('"')))
            except ValueError:
                continue  # HTTP: an invalid directive is ignored
    if max_age == 0:
        lookup = False
    return CacheControl(lookup=lookup, store=store, max_age=max_age)
