# The two commands a new user needs: `make demo` and `make test`. Everything else is set up on the way.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SECONDS ?= 20

.PHONY: demo test install lint unit integration stack-up stack-down clean

$(BIN)/fleetstream: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/fleetstream  ## create .venv and install fleetstream with every extra

demo: install  ## run the whole pipeline end to end on the local stack and print the summary
	$(BIN)/fleetstream demo --seconds $(SECONDS)

test: install lint  ## lint, type-check, then every test (integration tests start a local broker themselves)
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: install  ## only the fast tests that need nothing running
	$(BIN)/pytest -m "not integration"

integration: install
	$(BIN)/pytest -m integration

stack-up: install
	$(BIN)/fleetstream stack up

stack-down: install
	$(BIN)/fleetstream stack down

clean:
	rm -rf $(VENV) .fleetstream .pytest_cache .mypy_cache .ruff_cache
