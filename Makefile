# Two commands: `make run` and `make test`. Each bootstraps .venv from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint types unit bench bench-quick soak wrk redis-server fake-upstream clean

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

# The benchmark suite (bench/suite.py, < 10 minutes): needs wrk, redis-server and matplotlib.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk is missing: run 'sudo apt-get install wrk' and retry"; exit 1; \
	  fi; }

bench: $(BENCH_STAMP) wrk redis-server
	$(BIN)/python bench/suite.py

bench-quick: $(BENCH_STAMP) wrk redis-server
	$(BIN)/python bench/suite.py --quick

# Ten minutes of mixed load, RSS sampled (not in CI, not in `make bench`).
soak: $(BENCH_STAMP) wrk
	$(BIN)/python bench/soak.py

fake-upstream: $(STAMP)
	$(BIN)/promptrelay fake-upstream --port 8099

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
