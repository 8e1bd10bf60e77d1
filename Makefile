# genpipe: setup, test, demo, bench, lint. `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
# Inputs whose change means the environment must be refreshed.
SETUP_INPUTS := requirements/lock.txt requirements/dev-lock.txt requirements/carriers.txt pyproject.toml scripts/setup.sh scripts/setup_extras.sh
STAMP := $(VENV)/.genpipe-setup

.PHONY: help setup lock test demo bench lint image clean soak
help:
	@echo "make demo   set up, then train/export every model on the demo profile, serve, write out/"
	@echo "make test   set up, then run the test suite"
	@echo "make setup  create .venv (Python 3.10) from the lock; idempotent"
	@echo "make lock   re-resolve pyproject.toml's dependencies into requirements/*lock.txt (uv)"
	@echo "make bench  run the benchmarks (numbers in docs/benchmarks.md)"
	@echo "make lint   ruff"
	@echo "make soak   the long reliability runs (2,000 fuzz cases per protocol, a 10,000-request soak, pipeline kills, degraded models; docs/reliability.md)"
	@echo "make image  docker build the pipeline image as genpipe:<git commit> (IMAGE=... to rename, GPU=1 for CUDA)"

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@UV_VERSION=$(UV_VERSION) bash scripts/setup.sh
	@touch $(STAMP)

# lock.txt: the runtime (the image); dev-lock.txt: runtime + the `dev` extra, held to lock.txt's pins.
UV_COMPILE := $(BIN)/uv pip compile pyproject.toml --python-version 3.10 \
  --python-platform x86_64-unknown-linux-gnu
lock: $(STAMP)
	$(UV_COMPILE) -o requirements/lock.txt
	$(UV_COMPILE) --extra dev -c requirements/lock.txt -o requirements/dev-lock.txt

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	bash scripts/demo.sh

bench: $(STAMP)
	mkdir -p out/bench
	for b in benchmarks/*.py; do $(BIN)/python $$b --json out/bench/$$(basename $$b .py).json || exit 1; done
	$(BIN)/python benchmarks/quality_parity.py --speed 3 --json out/bench/quality_parity_speed.json

# Longer reliability runs CI does not run (docs/reliability.md): 2,000 fuzz cases per protocol,
# a 10,000-request soak, kill -9 of pipeline runs and the slower degraded-model checks.
soak: $(STAMP)
	GENPIPE_FUZZ_CASES=2000 $(BIN)/python -m pytest -q -s tests/test_reliability_fuzz.py
	GENPIPE_SOAK_REQUESTS=10000 $(BIN)/python -m pytest -q -s tests/test_reliability_load.py
	GENPIPE_SOAK=1 $(BIN)/python -m pytest -q -s tests/test_reliability_pipeline.py

lint: $(STAMP)
	$(BIN)/ruff check .

# The image Kubeflow runs for every component (docs/kubeflow.md); pass the printed tag to
# `genpipe run MODEL --compile-only FILE.yaml --image TAG` after pushing it to a registry.
IMAGE ?= genpipe:$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)$(if $(GPU),-gpu)
# GPU=1: the CUDA variant (tensorflow[and-cuda] on the same lock; docs/distributed.md).
IMAGE_ARGS := $(if $(GPU),--build-arg TENSORFLOW_EXTRAS=and-cuda)
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image: docker is not installed (or not on PATH); install Docker to build $(IMAGE)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answers (docker info failed); start it to build $(IMAGE)" >&2; exit 1; }
	docker build $(IMAGE_ARGS) -t $(IMAGE) .
	@echo "built $(IMAGE); push it (docker tag/push) and compile with --image <registry>/$(IMAGE)"

clean:
	rm -rf out runs .pytest_cache
