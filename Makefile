# Two commands: `make run` and `make test`. Each bootstraps .venv from nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# $(call ensure,CHECK,PACKAGE): when CHECK fails, install Debian's PACKAGE (as root), or
# stop with the one line that says how.
ensure = { $(1); } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "$(2) is missing: run 'sudo apt-get install $(2)' and retry"; exit 1; \
	  fi; }

.PHONY: run test lint types unit bench bench-quick bench-scaleout soak wrk valgrind redis-server postgresql chromium fake-upstream clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/promptrelay serve

test: $(STAMP) redis-server postgresql chromium lint types unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) redis-server postgresql chromium
	$(BIN)/pytest -q

# Tests start their own redis-server on a free port (and a Cluster and a Sentinel set,
# which redis-cli creates); this only makes sure the binaries exist.
redis-server:
	@$(call ensure,command -v redis-server,redis-server)
	@$(call ensure,command -v redis-cli,redis-tools)

# Tests create a throwaway PostgreSQL cluster (initdb + postgres on a free port, never 5432);
# this only makes sure the binaries exist (pg_config --bindir, or /usr/lib/postgresql/*/bin).
postgresql:
	@$(call ensure,command -v pg_config && test -x "$$(pg_config --bindir)/initdb" || ls /usr/lib/postgresql/*/bin/initdb,postgresql)

# The dashboard and /docs tests drive Debian's chromium through Playwright (never
# `playwright install`: it downloads a browser of its own).
chromium:
	@$(call ensure,test -x /usr/bin/chromium,chromium)

# The benchmark suite (bench/suite.py, < 15 minutes): needs wrk, valgrind, redis-server,
# chromium and matplotlib.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

wrk:
	@$(call ensure,command -v wrk,wrk)

# bench/telemetry.py counts a hit's instructions under callgrind.
valgrind:
	@$(call ensure,command -v valgrind && command -v callgrind_control,valgrind)

bench: $(BENCH_STAMP) wrk valgrind redis-server chromium
	$(BIN)/python bench/suite.py

bench-quick: $(BENCH_STAMP) wrk valgrind redis-server chromium
	$(BIN)/python bench/suite.py --quick

# Three instances on a Redis Cluster: shared hit ratio, hit throughput (about a minute).
bench-scaleout: $(BENCH_STAMP) redis-server
	$(BIN)/python bench/scaleout.py --markdown bench/results/scaleout.md

# Ten minutes of mixed load, RSS sampled (not in CI, not in `make bench`).
soak: $(BENCH_STAMP) wrk
	$(BIN)/python bench/soak.py

fake-upstream: $(STAMP)
	$(BIN)/promptrelay fake-upstream --port 8099

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
