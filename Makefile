# Meshline. Every target creates .venv and installs the project on first use (Python 3.11+ and, for the
# Postgres parts, a reachable PostgreSQL are all a fresh machine needs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.meshline-installed

.PHONY: demo test dev bench lint clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## simulate 14 days of the revenue flows with faults, load and check them through Dagster
	$(BIN)/meshline demo

test: $(STAMP) chromium  ## unit, integration (DuckDB and Postgres), end-to-end
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

chromium:  ## Debian's chromium, for the report test (installed once, if missing)
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the report test"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }

dev: $(STAMP)  ## the Dagster UI on 127.0.0.1:3000 over $$MESHLINE_HOME
	$(BIN)/meshline dev

bench: $(STAMP)  ## what users wait for, beside baselines measured in the same run (bench/run.py)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)  ## ruff, then mypy: strict for assets/ and expectations/, relaxed for tests (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf .meshline dbt_project/target dbt_project/logs .pytest_cache
