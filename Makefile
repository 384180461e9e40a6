# One-command set-up: `make train` (venv + install + the default job), `make test` (venv + install + tests).
# TORCH pins the PyTorch build installed before ssmbench; override it for another build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3.11
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev,sweep,slurm
# pytest-xdist workers (auto: one per core; tests/conftest.py gives each an equal share of the threads)
PYTEST_WORKERS ?= auto
BIN := $(VENV)/bin

.PHONY: install train test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-$(EXTRAS): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# The tests also check the Triton kernels, through Triton's interpreter on the CPU.
$(VENV)/.installed-kernels: $(VENV)/.installed-$(EXTRAS)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS),kernels]"
	touch $@

train: install
	$(BIN)/ssmbench train $(ARGS)

test: install $(VENV)/.installed-kernels
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
