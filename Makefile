# The two commands a user needs: `make run` (the server) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build to install; override on a GPU box, e.g. TORCH_SPEC="torch==2.14.1 torchvision==0.29.1".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?= -n 2

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: run test install install-dev system-test-deps clean image test-container wheelhouse

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

system-test-deps:
	bash scripts/ensure-test-system-deps.sh

run: install
	$(BIN)/steadyframe serve

test: install-dev system-test-deps
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# --- container image (README "Container") ---------------------------------------------------------
IMAGE ?= steadyframe:local
BASE_IMAGE ?= nvidia/cuda:13.0.1-runtime-ubuntu24.04
IMAGE_TORCH_SPEC ?= $(TORCH_SPEC)
# 1 = no package index during the build: every wheel comes from build/wheelhouse, which this
# machine's pip fills (its Python must match the base image's: cp311 for Debian bookworm) and
# scripts/build-image.sh serves to the build on loopback.
IMAGE_OFFLINE ?= 0
WHEELHOUSE := build/wheelhouse
# What `make test-container` builds: the Debian base made offline, the torch the suite uses (local disk).
TEST_BASE_IMAGE ?= steadyframe-base:bookworm
TEST_TORCH_SPEC ?= $(TORCH_SPEC)

# Refilled when the torch spec or the project's dependencies change (the stamp holds both).
wheelhouse: | $(BIN)/python
	@want="$(IMAGE_TORCH_SPEC) $$(sed -n '/^dependencies/,/^]/p' pyproject.toml | sha256sum | cut -c1-16)"; \
	if [ "$$(cat $(WHEELHOUSE)/.filled 2>/dev/null)" = "$$want" ]; then echo "wheelhouse up to date"; else \
	  rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE) && \
	  nice $(BIN)/python -m pip download -q -d $(WHEELHOUSE) --only-binary=:all: \
	    $(IMAGE_TORCH_SPEC) "setuptools>=68" wheel . && echo "$$want" > $(WHEELHOUSE)/.filled; fi

# Docker's layer cache (untagged images; `docker image prune` drops it) makes a rebuild after a code
# change take seconds: only the project's wheel is rebuilt and reinstalled.
image:
	@if [ "$(IMAGE_OFFLINE)" = 1 ]; then $(MAKE) --no-print-directory wheelhouse IMAGE_TORCH_SPEC="$(IMAGE_TORCH_SPEC)"; fi
	IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) TORCH_SPEC="$(IMAGE_TORCH_SPEC)" PYTHON=$(BIN)/python \
	  WHEELHOUSE=$(if $(filter 1,$(IMAGE_OFFLINE)),$(WHEELHOUSE)) bash scripts/build-image.sh

test-container: install-dev
	bash scripts/ensure-docker.sh
	bash scripts/build-base-image.sh $(TEST_BASE_IMAGE)
	$(MAKE) --no-print-directory image BASE_IMAGE=$(TEST_BASE_IMAGE) IMAGE_TORCH_SPEC="$(TEST_TORCH_SPEC)" IMAGE_OFFLINE=1
	STEADYFRAME_TEST_IMAGE=$(IMAGE) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 0 tests/container

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
