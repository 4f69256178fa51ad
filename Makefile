# protege: `make demo` runs the whole loop on the sandbox; `make test` runs the test suite.
# Both create .venv and install everything first (torch==2.13.0 is the CPU wheel on disk here).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test lint test-tools demo sandbox clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tools the tests use when present: Debian's docker-compose validates docker/compose.yaml
# (tests/test_deploy.py skips, saying so, without it). Installed only as root with apt-get;
# anywhere else this says what is missing and goes on.
test-tools:
	@command -v docker-compose >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && (apt-get install -y -qq docker-compose >/dev/null 2>&1 \
	           || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)); } \
	  || echo "docker-compose not installed (needs root + apt-get): the compose test will skip"

test: lint test-tools
	$(BIN)/python -m pytest -q

sandbox: setup
	$(BIN)/protege sandbox build --size demo

demo: setup
	$(BIN)/protege demo

clean-demo:
	rm -rf "$${PROTEGE_HOME:-$$HOME/.local/share/protege}/demo"
