# Two entry points for a fresh machine: `make demo` and `make test` (see README); `make study`
# after `make demo`.
# CUDA users pick their torch build, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out
# The demo's classifier: pointnet (default) or dgcnn, e.g. `make demo DEMO_MODEL=dgcnn DEMO_OUT=demo_dgcnn`.
DEMO_MODEL ?= pointnet
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# What the extension is built from: its sources, the build definition, and the torch it
# compiles against (its version file changes with every torch install).
EXT_INPUTS := $(shell find csrc -type f 2>/dev/null) setup.py pyproject.toml $(VENV)/.torch \
	$(wildcard $(VENV)/lib/python*/site-packages/torch/version.py)
BUILT := $(VENV)/.built

.PHONY: setup demo study test bench build docs cmake-check

# The venv with torch and what the extension build needs (their pins are requirements.txt's),
# then two independent jobs that make runs side by side (-j2): the rest of the packages, and
# the extension build. Downloading triton and ray overlaps the 90 s compile that way.
BUILD_REQS := ^(numpy|pybind11|ninja|setuptools|wheel)\b
MAKEFLAGS += -j2

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC) $$(grep -E '$(BUILD_REQS)' requirements.txt)
	touch $@

$(VENV)/.deps: $(VENV)/.torch requirements.txt
	$(PIP) install -q -r requirements.txt
	touch $@

# Rebuilt only when one of its inputs is newer than the last build (a full build is about
# 90 s on 2 cores; the editable install recompiles every source each time it runs).
$(BUILT): $(EXT_INPUTS)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(BUILT)

setup: $(VENV)/.deps build

demo: setup
	$(VENV)/bin/flowam-fast demo --model $(DEMO_MODEL) --out $(DEMO_OUT)

# The faithfulness study of the demo's model, on its outputs (run `make demo` first): into
# $(DEMO_OUT)/study; a rerun repeats nothing finished.
study: setup
	$(VENV)/bin/flowam-fast study --demo-dir $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/run_all.py

# The API pages (mkdocs.yml, docs/), built from the docstrings; --strict turns every broken
# reference or unparsable docstring into an error.
docs: setup
	$(VENV)/bin/mkdocs build --strict --site-dir site

# The CMake front end of the same build definition (csrc/build.json): configure, build and
# import the module it produces, so the two front ends cannot drift apart.
cmake-check: setup
	$(PY) csrc/cmake_check.py --build-dir build/cmake --jobs 2
