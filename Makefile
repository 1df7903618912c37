# The two quickstart commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV    := $(VENV)/.installed-dev
# test processes (pytest-xdist; a test file runs in one of them): the suite is mostly
# single-threaded, so two workers use both cores of the 2-core machine it is sized for
TEST_WORKERS ?= 2

.PHONY: demo test test-fast bench lint format clean venv

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV): $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(STAMP)

# Train the embedded default (shapes data, CPU-sized model), print the test split scores and a
# few captions, then caption 900 shapes scenes drawn afresh (never seen in training) and print how
# many name exactly their colours and shapes, per object count (README: measured figures).
demo: $(STAMP)
	$(PY) tools/train.py hydra.run.dir=outputs/demo trainer.progress=false
	$(PY) tools/fresh_shapes.py --checkpoint outputs/demo

test: $(DEV)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(DEV)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: $(DEV)
	$(PY) -m benchmarks all

lint: $(DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEV)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
