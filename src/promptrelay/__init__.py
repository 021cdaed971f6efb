"""promptrelay: a fast, dependable gateway in front of the Anthropic API."""

__version__ = "0.1.0"

__all__ = ["__version__"]
