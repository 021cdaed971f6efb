# Two commands: `make run` and `make test`. Each bootstraps .venv from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint types unit bench redis-server fake-upstream clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/promptrelay serve

test: $(STAMP) redis-server lint types unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) redis-server
	$(BIN)/pytest -q

# Tests start their own redis-server on a free port; this only makes sure the binary exists.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "redis-server is missing: run 'sudo apt-get install redis-server' and retry"; exit 1; \
	  fi; }

bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null 2>&1; } || true
	$(BIN)/python bench/overhead.py --json bench/results/overhead.json --markdown bench/results/overhead.md
	$(BIN)/python bench/cache.py --json bench/results/cache.json --markdown bench/results/cache.md
	$(BIN)/python bench/telemetry.py --json bench/results/telemetry.json --markdown bench/results/telemetry.md

fake-upstream: $(STAMP)
	$(BIN)/promptrelay fake-upstream --port 8099

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
