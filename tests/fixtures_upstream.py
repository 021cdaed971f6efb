"""Fixtures: a real fake-Anthropic server over HTTP."""
