# protege: `make demo` runs the whole loop on the sandbox; `make test` runs the test suite.
# Both create .venv and install everything first (torch==2.13.0 is the CPU wheel on disk here).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test lint demo sandbox clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

sandbox: setup
	$(BIN)/protege sandbox build --size demo

demo: setup
	$(BIN)/protege demo

clean-demo:
	rm -rf "$${PROTEGE_HOME:-$$HOME/.local/share/protege}/demo"
