"""Shared fixtures live in tests/fixtures_*.py; each is registered here.

The tests build Settings explicitly, so configuration from the machine's environment
(an ANTHROPIC_API_KEY, a HOST, ...) must not leak into them.
"""

import os

from promptrelay.settings import Settings

for _name in Settings.model_fields:
    os.environ.pop(_name.upper(), None)

pytest_plugins = [
    "tests.fixtures_upstream",
    "tests.fixtures_redis",
    "tests.fixtures_topologies",
    "tests.fixtures_gateway",
    "tests.fixtures_postgres",
]
