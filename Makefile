# genpipe: setup, test, demo, bench, lint. `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Inputs whose change means the environment must be refreshed.
SETUP_INPUTS := requirements/lock.txt requirements/carriers.txt pyproject.toml scripts/setup.sh scripts/setup_extras.sh
STAMP := $(VENV)/.genpipe-setup

.PHONY: help setup lock test demo bench lint clean
help:
	@echo "make demo   set up, then train/export every model on the demo profile, serve, write out/"
	@echo "make test   set up, then run the test suite"
	@echo "make setup  create .venv (Python 3.10) from the lock; idempotent"
	@echo "make lock   re-resolve requirements/lock.txt from requirements/base.in with uv"
	@echo "make bench  run the benchmarks (numbers in docs/benchmarks.md)"
	@echo "make lint   ruff"

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@UV_VERSION=$(UV_VERSION) bash scripts/setup.sh
	@touch $(STAMP)

lock: $(STAMP)
	$(BIN)/uv pip compile requirements/base.in -o requirements/lock.txt \
	  --python-version 3.10 --python-platform x86_64-unknown-linux-gnu

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	mkdir -p out/bench
	for b in benchmarks/*.py; do $(BIN)/python $$b --json out/bench/$$(basename $$b .py).json || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf out runs .pytest_cache
