# Two commands do the whole set-up on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-slow test-cuda test-posteriordb lint bench docs clean

# The CPU wheel of torch lies on disk: install it first so nothing pulls a CUDA build.
$(VENV)/.core: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(BIN)/pip install --quiet -e ".[test,dist,docs]"
	touch $@

demo: $(VENV)/.core
	$(BIN)/ppltk demo $(DEMO_ARGS)

test: $(VENV)/.test
	$(BIN)/python -m pytest -q -m "not slow and not cuda" $(PYTEST_ARGS)

test-slow: $(VENV)/.test
	$(BIN)/python -m pytest -q -m "slow" $(PYTEST_ARGS)

test-cuda: $(VENV)/.test
	$(BIN)/python -m pytest -q -m "cuda" $(PYTEST_ARGS)

test-posteriordb: $(VENV)/.test
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -s -m "posteriordb" tests/posteriordb $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(BIN)/ruff check ppltk tests benchmarks docs
	$(BIN)/ruff format --check ppltk tests benchmarks docs

# `particles` (the SMC peer) pins numpy < 2, which the test environment cannot have: it gets
# its own environment, used by benchmarks/smc_particles.py through a subprocess.
.venv-particles/.done:
	test -x .venv-particles/bin/python || $(PYTHON) -m venv .venv-particles
	.venv-particles/bin/pip install --quiet "particles==0.4"
	touch $@

$(VENV)/.bench: $(VENV)/.test
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $@

bench: $(VENV)/.bench .venv-particles/.done
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

docs: $(VENV)/.test
	$(BIN)/python -m sphinx -b html -W --keep-going docs docs/_build/html

clean:
	rm -rf $(VENV) .venv-particles docs/_build ppltk-report .pytest_cache
