"""Model prices, for the dollars the cache saved.

A provider configuration (PROVIDERS_FILE) may supply `price(model)`; without one, or when
it does not know a model, this small built-in table answers by model family. Prices are
US dollars per million tokens (input, output), Anthropic's list prices; unknown models
are counted as unpriced rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["BUILTIN_PRICES", "PriceFn", "builtin_price", "chain_prices"]

PriceFn = Callable[[str], tuple[float, float] | None]

# Most specific prefix first: "claude-opus-4-5" must not match "claude-opus-4".
BUILTIN_PRICES: tuple[tuple[str, tuple[float, float]], ...] = (
    ("claude-opus-4-5", (5.0, 25.0)),
    ("claude-opus-4", (15.0, 75.0)),
    ("claude-3-opus", (15.0, 75.0)),
    ("claude-sonnet-4", (3.0, 15.0)),
    ("claude-3-7-sonnet", (3.0, 15.0)),
    ("claude-3-5-sonnet", (3.0, 15.0)),
    ("claude-haiku-4-5", (1.0, 5.0)),
    ("claude-3-5-haiku", (0.8, 4.0)),
    ("claude-3-haiku", (0.25, 1.25)),
)


def builtin_price(model: str) -> tuple[float, float] | None:
    for prefix, price in BUILTIN_PRICES:
        if model.startswith(prefix):
            return price
    return None


def chain_prices(primary: PriceFn | None) -> PriceFn:
    """`primary` first (the providers file), then the built-in table."""
    if primary is None:
        return builtin_price

    def price(model: str) -> tuple[float, float] | None:
        return primary(model) or builtin_price(model)

    return price
