# Two entry points for a fresh machine: `make demo` and `make test` (see README).
# CUDA users pick their torch build, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test bench build

$(VENV)/.deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -r requirements.txt
	touch $@

# The extension is rebuilt on every setup: it is cheap when nothing changed (ninja).
build: $(VENV)/.deps
	$(PIP) install -q --no-build-isolation --no-deps -e .

setup: build

demo: setup
	$(VENV)/bin/flowam-fast demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/run_all.py
