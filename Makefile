# Two commands do everything on a fresh machine:
#   make up     start a private MariaDB/MySQL with the binlog settings, and auroratrack in front
#   make test   run the whole test suite
# Both install what they need (a virtualenv, and Debian packages when run as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE := .auroratrack
SERVER_DIR := $(STATE)/server
DATA_DIR := $(STATE)/data
PROXY_LISTEN ?= 127.0.0.1:3307
ADMIN_LISTEN ?= 127.0.0.1:3308
UPSTREAM ?=

.PHONY: up down test bench capture-bench relay-instructions undo-bench undo-floor lint deps system-deps clean

# setup.py compiles proxy/tracker.py and proxy/changelog/_scan.py (mypyc): an edited tracker needs a rebuild, or the stale
# build is ignored and the slower pure-Python code runs.
$(VENV)/.installed: pyproject.toml setup.py proxy/tracker.py proxy/changelog/_scan.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

# The test extras include MariaDB's Python connector, which builds against libmariadb-dev:
# install the Debian packages first.
$(VENV)/.test-installed: $(VENV)/.installed pyproject.toml | system-deps
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

deps: $(VENV)/.installed

system-deps:
	scripts/ensure-system-packages.sh clients

tests/clients/node/node_modules/.installed: tests/clients/node/package.json
	cd tests/clients/node && npm install --no-audit --no-fund --silent
	touch $@

up: deps
	scripts/ensure-system-packages.sh server
	@scripts/up.sh "$(UPSTREAM)" "$(PROXY_LISTEN)" "$(ADMIN_LISTEN)"

down:
	@-scripts/down.sh

test: $(VENV)/.test-installed tests/clients/node/node_modules/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: deps  ## the proxy hop: sysbench direct / haproxy / auroratrack
	scripts/ensure-system-packages.sh bench
	$(BIN)/python bench/proxy_bench.py $(BENCH_ARGS)

capture-bench: deps  ## changelog capture throughput, lag and bytes
	scripts/ensure-system-packages.sh bench
	$(BIN)/python bench/capture_bench.py $(BENCH_ARGS)

relay-instructions: deps  ## the relay's user-space instructions per query (callgrind): deterministic
	scripts/ensure-system-packages.sh bench
	$(BIN)/python bench/relay_instructions.py $(BENCH_ARGS)

undo-bench: deps  ## 1M-row DELETE and UPDATE undone: auroratrack against mariadb-binlog --flashback
	scripts/ensure-system-packages.sh bench
	$(BIN)/python bench/undo_bench.py $(BENCH_ARGS)

undo-floor: deps  ## the server's own floor for an SQL undo of the undo benchmark's mistakes
	$(BIN)/python bench/undo_floor.py $(BENCH_ARGS)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check proxy tests bench

clean: down
	rm -rf $(STATE)
