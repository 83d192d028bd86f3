# Ratatouille — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv on PATH, else the project's own: `make uv` fetches it from PyPI with stack/get-uv.py (python3's
# standard library only: no pip, works on a stock Debian/Ubuntu python3 under PEP 668).
UV_LOCAL := $(CURDIR)/.ratatouille/tools/uv
UV := $(shell command -v uv 2>/dev/null || echo "$(UV_LOCAL)")
VENV := .venv
BIN := $(VENV)/bin
export RATATOUILLE_HOME ?= $(CURDIR)/.ratatouille
export DAGSTER_HOME ?= $(RATATOUILLE_HOME)/dagster
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEV_HOST ?= 127.0.0.1
DEV_PORT ?= 3000
PYTEST_ARGS ?=
# Test modules run side by side on this many pytest-xdist workers in `make test` (1: one at a time).
TEST_WORKERS ?= 2
BENCH_SCALE ?= small
# podman on this kind of machine: runc and lower rlimits (tests/stack/setup-podman.sh writes it).
STACK_CONF ?= $(CURDIR)/.ratatouille/podman/containers.conf

.PHONY: help uv install notebook-env notebook manifest demo dev serve browser postgres stack-images stack-test test test-fast bench validate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

uv: ## fetch uv (from PyPI, into .ratatouille/tools/) if it is not on PATH
	@command -v uv >/dev/null 2>&1 || test -x $(UV_LOCAL) || python3 stack/get-uv.py $(UV_LOCAL)

# --compile-bytecode: the .pyc files are written at install time, as in the image (Dockerfile). A
# venv without them (uv does not write them; PYTHONDONTWRITEBYTECODE=1 keeps Python from doing it
# on first import) recompiles every module in every process: a run worker of `make dev` spent ~5 s
# of its ~9 s start compiling Dagster, dbt and pyiceberg. The Makefile is a prerequisite so that a
# change of these flags reaches an existing venv.
$(VENV)/.installed: pyproject.toml uv.lock Makefile | uv
	$(UV) sync --frozen --python 3.11 --compile-bytecode
	@touch $@

install: $(VENV)/.installed ## create .venv from the lock file

# JupyterLab, pandas and matplotlib (the `notebook` extra) live in an environment of their own, made
# from the same lock with the project installed: in .venv they would cost every run worker ~1.4 s of
# imports it never uses (jupyter-events pulls in rfc3987-syntax, which jsonschema imports and which
# builds a grammar at import time: 1.1 s, in every process that imports dbt).
NOTEBOOK_VENV := $(CURDIR)/.ratatouille/notebook-venv
$(NOTEBOOK_VENV)/.installed: pyproject.toml uv.lock Makefile | uv
	UV_PROJECT_ENVIRONMENT=$(NOTEBOOK_VENV) $(UV) sync --frozen --python 3.11 --compile-bytecode --extra notebook
	@touch $@

notebook-env: $(NOTEBOOK_VENV)/.installed ## the JupyterLab environment (.ratatouille/notebook-venv: the project plus JupyterLab, pandas, matplotlib)

notebook: manifest notebook-env ## JupyterLab on docs/notebooks, reading your lakehouse (the starter notebook reads gold)
	$(NOTEBOOK_VENV)/bin/jupyter lab docs/notebooks

dbt_project/target/manifest.json: $(VENV)/.installed sources.yml $(shell find dbt_project/models dbt_project/macros dbt_project/tests -type f 2>/dev/null) dbt_project/dbt_project.yml
	$(BIN)/python -m ratatouille_assets.project.manifest
	@touch $@

manifest: dbt_project/target/manifest.json ## generate the dbt sources from sources.yml and parse the dbt project (the manifest Dagster loads)

demo: manifest ## sample data -> bronze -> silver -> gold for 7 days, then a summary
	$(BIN)/rat demo

# Through the wrapper: it re-arms SIGINT, so Ctrl-C and `kill -INT` stop webserver, daemon and code server.
# make dev BRANCH=<name>: dev mode, every write to data branch <name> (BRANCH=git: the current git branch).
BRANCH ?=
DEV_BRANCH = $(if $(filter git,$(BRANCH)),$(shell git rev-parse --abbrev-ref HEAD),$(BRANCH))

dev: manifest ## the Dagster UI (webserver + daemon) on the demo data, http://127.0.0.1:3000; BRANCH=<name>|git: dev mode
	$(if $(DEV_BRANCH),RATATOUILLE_BRANCH=$(DEV_BRANCH) )$(BIN)/python -m ratatouille_assets.devserver --host $(DEV_HOST) --port $(DEV_PORT)

serve: $(VENV)/.installed ## the SQL endpoint for BI tools and psql (PostgreSQL protocol, read-only) on 127.0.0.1:5433; needs RATATOUILLE_SQL_PASSWORD
	$(BIN)/rat serve

validate: manifest ## check that the definitions load: sources, dbt model contract, Soda files
	$(BIN)/rat validate

browser: ## install Debian's chromium for the UI tests
	@test -x /usr/bin/chromium || { \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; \
	}

postgres: ## install Debian's PostgreSQL server and clients (psql, pgjdbc) for the S3/Postgres and `rat serve` tests
	@# Each test run starts its own cluster. psql comes with the server; pgjdbc (and a Java runtime,
	@# if the machine has none) is the driver Metabase and DBeaver use, for tests/test_serve.py.
	@{ ls /usr/lib/postgresql/*/bin/initdb && test -f /usr/share/java/postgresql.jar && command -v java; } >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends postgresql libpostgresql-jdbc-java \
			$$(command -v java >/dev/null || echo default-jre-headless); \
	}

stack-images: ## podman, debootstrapped images (base, stock Debian), the app image and the test stand-ins (no registry needed)
	tests/stack/setup-podman.sh $(STACK_CONF)
	CONTAINERS_CONF=$(STACK_CONF) tests/stack/base-image.sh
	CONTAINERS_CONF=$(STACK_CONF) tests/stack/stock-image.sh
	CONTAINERS_CONF=$(STACK_CONF) tests/stack/stack.sh images

stack-test: manifest stack-images ## under podman: the compose stack (a day through it via GraphQL, gold checked) and the Helm chart via kube play
	@# A podman killed mid-command (a test's timeout) keeps its container locks held: every later
	@# command needing one hangs. Nothing of ours runs now, so reallocating the locks is safe.
	CONTAINERS_CONF=$(STACK_CONF) podman system renumber
	CONTAINERS_CONF=$(STACK_CONF) $(BIN)/pytest tests/stack -m stack $(PYTEST_ARGS)

STACK_LOG := $(RATATOUILLE_HOME)/stack-test.log

test: manifest browser postgres notebook-env ## run the test suite (real DuckDB, Iceberg, dbt, Dagster, S3, PostgreSQL, a browser) and, beside it, the stack test
	@# The stack test (podman: images, then the compose stack and the chart) spends most of its ~12
	@# minutes waiting on downloads and containers, so it runs beside the suite; its output is kept in
	@# $(STACK_LOG) and printed when both have ended. Either failing fails `make test`; one failure
	@# never hides another.
	@mkdir -p $(dir $(STACK_LOG)); rc=0; \
		$(MAKE) --no-print-directory stack-test > $(STACK_LOG) 2>&1 & stack=$$!; \
		$(BIN)/pytest --ignore=tests/stack -m "not stack" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || rc=$$?; \
		wait $$stack; stack_rc=$$?; \
		echo "=== the stack test (make stack-test), beside the suite: exit $$stack_rc; its output ($(STACK_LOG)) ==="; \
		cat $(STACK_LOG); \
		[ $$stack_rc -eq 0 ] || rc=$$((rc ? rc : 1)); exit $$rc

test-fast: manifest ## the fast tier, what bare `pytest` runs: no dbt pipelines, servers, podman or browser (a few minutes)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: manifest ## measure the platform against plain DuckDB (BENCH_SCALE=small: <5 min; full: see BENCHMARKS.md)
	$(BIN)/python -m bench --scale $(BENCH_SCALE)

clean: ## remove the local lakehouse (.ratatouille/) and dbt artefacts
	rm -rf .ratatouille dbt_project/target dbt_project/logs
