"""Fixtures: a real redis-server on a free port."""
