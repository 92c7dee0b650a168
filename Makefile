# The two commands: `make run` and `make test`. Everything else serves them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint format check-python migrate seed clean bench soak

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

## make test: install what tests need, run the linters, then the whole suite (what CI runs)
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff (lint + format check) and mypy; make test runs them first
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

## make bench: seed 100,000 agents and 1,000,000 jobs in PostgreSQL, drive the real app under
## gunicorn with wrk (apt-get install wrk), print the hot paths and beat's sweeps in one table;
## then seed a year of one 100,000-agent customer on top and print a second table: every
## portal page and admin changelist, every Celery task, and the retention run over the year.
## make bench-pages: the second table only (no wrk). BENCH_ARGS="--page-requests 5" is quicker.
## BENCH_DATABASE_URL (database *_bench, recreated) and BENCH_REDIS_URL (emptied) may be set.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agentina_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/14
BENCH_ENV = DEBUG=false SECRET_KEY=bench-only-not-a-secret-bench-only-not-a-secret \
	SECURE_SSL_REDIRECT=false DATABASE_URL=$(BENCH_DATABASE_URL) \
	PRESENCE_BUFFER_URL=$(BENCH_REDIS_URL) STATICFILES_BACKEND=django.contrib.staticfiles.storage.StaticFilesStorage
define BENCH_FRESH_DB
	$(BIN)/python -c 'import psycopg, sys; u=sys.argv[1]; name=u.rsplit("/",1)[1]; assert name.endswith("_bench"), name; c=psycopg.connect(u.rsplit("/",1)[0]+"/postgres", autocommit=True); c.execute(f"DROP DATABASE IF EXISTS {name}"); c.execute(f"CREATE DATABASE {name}")' $(BENCH_DATABASE_URL)
	$(BIN)/python -c 'import redis, sys; redis.Redis.from_url(sys.argv[1]).flushdb()' $(BENCH_REDIS_URL)
	$(BENCH_ENV) $(BIN)/python manage.py migrate -v0
endef
.PHONY: bench-pages
bench: $(VENV)/.installed-run
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BENCH_FRESH_DB)
	$(BENCH_ENV) $(BIN)/python scripts/bench/bench.py $(BENCH_ARGS)
bench-pages: $(VENV)/.installed-run
	$(BENCH_FRESH_DB)
	$(BENCH_ENV) $(BIN)/python scripts/bench/bench.py --only year $(BENCH_ARGS)

## make soak: 3 web processes, 2 workers and beat on PostgreSQL and a redis-server of its own,
## 1,000 simulated agents for 10 minutes through a Redis kill, a PostgreSQL restart (simulated
## at the network: a TCP proxy cuts every connection) and a worker kill; prints false offline
## agents, jobs run twice, 5xx outside the fault windows and snapshot minutes missing, each
## of which must be 0. SOAK_ARGS="--minutes 30 --agents 1000" runs longer. Not in make test.
## SOAK_DATABASE_URL (database *_soak, recreated) and SOAK_REDIS_URL (a free port) may be set.
SOAK_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/agentina_soak
SOAK_REDIS_URL ?= redis://127.0.0.1:6391
# 1,000 agents activate from one address: the activation limit is raised for the soak only.
SOAK_ENV = DEBUG=false SECRET_KEY=soak-only-not-a-secret-soak-only-not-a-secret-soak-only \
	SECURE_SSL_REDIRECT=false DATABASE_URL=$(SOAK_DATABASE_URL) \
	CELERY_BROKER_URL=$(SOAK_REDIS_URL)/0 CACHE_URL=$(SOAK_REDIS_URL)/1 \
	PRESENCE_BUFFER_URL=$(SOAK_REDIS_URL)/2 API_ACTIVATE_RATE=5000/min \
	STATICFILES_BACKEND=django.contrib.staticfiles.storage.StaticFilesStorage
soak: $(VENV)/.installed-run
	@command -v redis-server >/dev/null || { echo "make soak needs redis-server: apt-get install redis-server"; exit 1; }
	$(BIN)/python -c 'import psycopg, sys; u=sys.argv[1]; name=u.rsplit("/",1)[1]; assert name.endswith("_soak"), name; c=psycopg.connect(u.rsplit("/",1)[0]+"/postgres", autocommit=True); c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"); c.execute(f"CREATE DATABASE {name}")' $(SOAK_DATABASE_URL)
	$(SOAK_ENV) $(BIN)/python manage.py migrate -v0
	$(SOAK_ENV) $(BIN)/python scripts/soak/soak.py $(SOAK_ARGS)
