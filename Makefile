# make repro   set up .venv if needed, run the pipeline (dvc repro), print every paper's verdicts
# make data    fetch and verify every dataset and model the papers read (data-fetch stages; see docs/data.md)
# make test    the whole test suite (what CI runs; fetches the data first)
# make lab     JupyterLab on the repository
VENV ?= .venv
PYTHON ?= python3
# Where pip finds torch. Empty: the configured indexes (here, the local CPU build of torch 2.13.0).
# Elsewhere, for a CPU-only install: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
# Offline dataset mirror for the data-fetch stages (see docs/data.md); defaults to ../shared/datasets if present.
REPLICATIONS_DATA_MIRROR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets))
export REPLICATIONS_DATA_MIRROR
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: setup data repro test test-fast lab report clean-venv

setup: $(STAMP)

# The lock is a complete `pip freeze`, so it is installed as it is (--no-deps): no dependency resolution,
# which with a lock this size can backtrack for many minutes (and download CUDA builds of torch) as soon as
# one pin is not installable; `pip check` then verifies that the pins are consistent.
# Python >= 3.11.5 (checked on the venv's own interpreter, which may predate PYTHON): some pins (e.g.
# soupsieve 4.1.3) require it, and Debian 12's python3 is 3.11.2.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))' || { echo "make setup: $(VENV) \
	uses Python $$($(BIN)/python -c 'import platform; print(platform.python_version())'); the pinned packages \
	need Python >= 3.11.5 (rm -rf $(VENV); make setup PYTHON=/path/to/python3.11)" >&2; exit 1; }
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

repro: setup
	$(BIN)/dvc repro
	@$(BIN)/papers summary

# The smoke tests execute every notebook, so the data stages must have run (about 30 s from the mirror).
data: setup
	$(BIN)/dvc repro --glob 'data_*'

test: setup data
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

report: setup
	$(BIN)/papers report

# Lab's settings overrides (jupyter/overrides.json: Python files, the .nb.py notebooks among them, open as
# notebooks; the default kernel starts without a dialog) go into the venv's app settings; PYTHONPATH makes
# the kernel import this checkout's `papers` and `shared`, even when the venv is shared with another one.
lab: setup
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	PYTHONPATH=$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH)) $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) --notebook-dir=.

clean-venv:
	rm -rf $(VENV)
