"""Shared fixtures live in tests/fixtures_*.py; each is registered here."""

pytest_plugins = ["tests.fixtures_upstream", "tests.fixtures_redis"]
