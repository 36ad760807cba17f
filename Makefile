# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := plugins/pipeflow-sql
# uv installs what pip would (the same requirements from the same index, pyproject.toml's), about
# five times faster: pip brings uv into the venv, uv does the rest (README's pip line: the image's)
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q
UV := $(BIN)/uv pip install --python $(BIN)/python -q

.PHONY: install install-test demo test test-fast audit lint bench bench-peers docs clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(BIN)/uv: $(BIN)/python
	$(PIP) uv

install: $(BIN)/uv
	$(UV) -e . $(addprefix -e ,$(PLUGINS))

install-test: $(BIN)/uv
	$(UV) -e '.[test]' $(addprefix -e ,$(PLUGINS))
	# Debian's chromium for the dashboard's browser tests (installed when missing and we are root)
	command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || true
	# Debian's postgresql for the team-store tests (a throwaway cluster per test session)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; }; }; } || true

## Install pipeflow and run the flagship example end to end.
demo: install
	$(BIN)/pipeflow run specs/claims/pipeline.yaml
	$(BIN)/pipeflow runs output latest report --spec specs/claims/pipeline.yaml

# The suite on two pytest-xdist workers (CI's machine and this one have two cores; a worker is a
# process, so -n is capped at 2 rather than auto). loadscope: a module's tests go to one worker, in
# order, as in one process: modules whose tests built on each other's state failed under worksteal
# and load, which split a module over both workers (tests/registry/test_models_cli.py did: its
# tests now set up what they need; no run of the whole suite has shown that no other module does);
# and each module-scoped fixture (a trained project, a server) starts once, not once per worker.
# The modules go out longest first (tests/helpers.py: HEAVY, ordered by tests/conftest.py;
# xdist's own reordering off).
XDIST ?= -n 2 --dist loadscope

## Install the test dependencies and run the whole test suite (slow and cluster tests included).
test: install-test
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) --durations=40
	$(BIN)/ruff check pipeflow plugins tests benchmarks tools docs/examples
	$(BIN)/ruff format --check pipeflow plugins tests benchmarks tools docs/examples
	$(BIN)/lint-imports
	$(BIN)/bandit -q -c pyproject.toml -r pipeflow plugins -ll
	$(BIN)/python tools/audit_dependencies.py

## Known vulnerabilities in the installed dependencies (pip-audit; where it audits nothing, from the
## index's JSON: tools/audit_dependencies.py); fails if any package could not be audited.
audit: install-test
	$(BIN)/python tools/audit_dependencies.py --strict

## Everyday loop: skip the slow and cluster tests.
test-fast: install-test
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow and not cluster"

## The docs site in site/: the generated spec keys rewritten, then every link and anchor checked.
docs: $(BIN)/python
	$(PIP) -e '.[docs]' $(addprefix -e ,$(PLUGINS))
	$(BIN)/python tools/spec_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python benchmarks/bench_core.py

## The peers' table (docs/benchmarks.md): kedro, httpx in .venv; MLflow and BentoML in their own
## venvs (benchmarks/peers/.venv, benchmarks/peers/.venv-bentoml), skipped with the reason if absent.
bench-peers: install
	$(PIP) httpx kedro
	$(BIN)/python benchmarks/peers/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache specs/*/.pipeflow site
