# The two commands: `make run` and `make test`. Everything else serves them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format check-python migrate seed clean bench-beat

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

## make run: set up and run web + worker + beat on the embedded default (SQLite, filesystem broker)
run: $(VENV)/.installed-run
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate --no-input
	DEBUG=$${DEBUG:-true} $(BIN)/python scripts/run_stack.py

## make test: install what tests need and run the whole suite
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff (lint + format check) and mypy, as CI runs them
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=true $(BIN)/mypy .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(VENV)/.installed-run
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py migrate

seed: migrate
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py seed_demo

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .mypy_cache .ruff_cache

## make bench-beat: time the stale sweep and the snapshot over 100,000 agents and 1,000,000 jobs
## (needs PostgreSQL; BENCH_DATABASE_URL defaults to the local server, database agentina_bench)
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agentina_bench
bench-beat: $(VENV)/.installed-run
	$(BIN)/python -c 'import psycopg, sys; u=sys.argv[1]; base=u.rsplit("/",1)[0]+"/postgres"; c=psycopg.connect(base, autocommit=True); c.execute("DROP DATABASE IF EXISTS agentina_bench"); c.execute("CREATE DATABASE agentina_bench")' $(BENCH_DATABASE_URL)
	DEBUG=true DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python manage.py migrate -v0
	DEBUG=true DATABASE_URL=$(BENCH_DATABASE_URL) $(BIN)/python manage.py bench_beat
