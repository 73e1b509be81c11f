# `make run` and `make test` work from nothing: they create .venv and install pinned dependencies first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench mutation clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tokenim serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: lint
	url="$$(scripts/postgres-for-tests.sh)" || exit 1; \
	TOKENIM_TEST_DATABASE_URL="$$url" $(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

# Mutation testing of the security-critical modules (see docs/testing.md); not part of `make test`.
# One group while developing: make mutation GROUPS=login
mutation: $(STAMP)
	nice -n 15 $(BIN)/python scripts/mutation.py $(GROUPS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build/mutation
