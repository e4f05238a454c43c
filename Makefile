# Two commands do everything on a fresh machine:
#   make demo   # creates .venv if needed, then runs the main job on the embedded default
#   make test   # creates .venv if needed, then runs the test suite (what CI runs)
# make test runs the tests that start Ray and, niced beside them, the others (tests/run_suite.py).
# make test-fast is the edit loop: every test that starts no Ray and trains no multi-epoch model.
# make lint checks style, formatting and types (ruff, mypy; configured in pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on machines without CUDA: never a multi-GB CUDA download there.
# Elsewhere add an index that serves CPU wheels, e.g. make TORCH_PIP_ARGS="--index-url <cpu-wheel-index>".
TORCH_CPU ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# Real data (../shared/data by default); tests skip the parts that need it when it is absent.
export MTLMOOD_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test test-fast bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_CPU)"; fi
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(BIN)/mtlmood demo

test: setup
	RAY_AUTH_MODE=disabled $(BIN)/python tests/run_suite.py $(PYTEST_ARGS)

test-fast: setup
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m "not ray and not slow" $(PYTEST_ARGS)

LINT_PATHS := mtlmood study serve catalog mtlmood_cli tests benchmarks

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy mtlmood study serve catalog mtlmood_cli benchmarks/load

bench: setup
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
