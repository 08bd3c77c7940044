# The two commands of the README: `make run` and `make test`. Both install what they need first (idempotent).
SHELL := /bin/bash
LIBTORCH ?= $(CURDIR)/.venv/lib/python3.11/site-packages/torch
export LIBTORCH
export OMP_NUM_THREADS := 1
# Incremental caches add ~750 MB to a one-shot build (CI runs `make test` once on a clean clone, on a small disk).
export CARGO_INCREMENTAL ?= 0
export TEMPONET_TANSU ?= $(CURDIR)/.tools/tansu
CARGO ?= cargo
RUN_OUT ?= out/run

.PHONY: setup build run test bench

setup:
	@bash scripts/setup.sh

# The dev profile (dependencies at opt-level 2) is shared with `make test`: no second, release-only build.
build: setup
	$(CARGO) build -p temponet-pipelines

run: build
	@bash scripts/run-default.sh $(RUN_OUT)

test: setup
	$(CARGO) test --workspace --all-targets --no-fail-fast

bench: setup
	$(CARGO) bench --workspace
