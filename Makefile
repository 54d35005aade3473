# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UCM ?= ../shared/datasets/ucm-multilabel
RUN ?= runs/ucm-head

.PHONY: install run train evaluate test lint typecheck bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# For now: train on the UCM archive in head mode (frozen backbone, CPU-friendly), then
# evaluate on its test split. A finished or interrupted run resumes instead of restarting.
run: train evaluate

train: install
	$(VENV)/bin/grn train --archive $(UCM) --out $(RUN) --mode head

evaluate: install
	$(VENV)/bin/grn evaluate --model $(RUN) --archive $(UCM) --out $(RUN)/eval

lint: install
	$(VENV)/bin/ruff check model index service tests bench

typecheck: install
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest

bench: install
	$(PY) bench/throughput.py --archive $(UCM)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
