"""Development tools kept apart from the serving path.

`fake` is a fake Anthropic API over real HTTP (`promptrelay fake-upstream`, and every test
that needs an upstream); `loadgen` is the load generator behind `promptrelay bench`.
Nothing under `promptrelay.api`, `core`, `cache`, `upstream` or `resilience` imports this
package.
"""
