# devvis: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch/torchvision pinned to the releases this project is tested with; elsewhere pip gets them from the index.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
# Test processes (pytest-xdist; one torch thread each). Whole files go to one worker, so a module's
# fixtures are built once. TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
PYTEST := cd tests && OMP_NUM_THREADS=1 ../$(VENV)/bin/pytest -p no:cacheprovider $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
BENCH_ARGS ?=

.PHONY: venv install demo test test-fast bench clean

$(VENV)/.deps: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q ".[dev]"
	touch $@

venv: $(VENV)/.deps

# A regular (non-editable) install, redone each time, so tests import the installed package.
install: venv
	$(PIP) install -q --no-deps --no-build-isolation --force-reinstall .
	rm -rf build devvis.egg-info

demo: install
	$(VENV)/bin/devvis demo --output-path demo_output

test: install
	$(PYTEST) $(PYTEST_ARGS)

test-fast: install
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

# Installs torch-lucent (--no-deps) into benchmarks/.deps for the comparison; never a devvis dependency.
bench: install
	bash benchmarks/setup_lucent.sh $(PY)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output
