"""Tests of the cache tiers (memory, Redis, tiered)."""
