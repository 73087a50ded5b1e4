# diffmf: every target sets up what it needs first (scripts/setup_env.sh is idempotent and takes
# about a second once the venv exists). See README "Quick start".
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
export DIFFMF_VENV := $(abspath $(VENV))
PY := $(DIFFMF_VENV)/bin/python
# The ROS wheels' start-up hook skips its library-path setup when this is inherited (e.g. make run
# from another venv's Python): let this venv's Python set up its own.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-x -k transport"`.
PYTEST_ARGS ?=
# `make test` runs the suite on this many pytest-xdist workers (CI machines have 2 cores; most
# tests wait on child processes, so two workers are about twice as fast). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -p no:cacheprovider -q -rfEs --timeout=900

.PHONY: help setup test soak demo colcon-check

help:
	@echo "make setup         create/update .venv (requirements, msg build, editable install)"
	@echo "make test          setup, then the whole test suite except 'slow' tests"
	@echo "make soak          setup, then only the long 'slow' (soak/overload) tests"
	@echo "make demo          setup, then scripts/demo.sh"
	@echo "make colcon-check  setup, then colcon build of this package in a scratch workspace"

setup:
	@scripts/setup_env.sh

test: setup
	$(PYTEST) -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS) test

soak: setup
	scripts/soak.sh $(PYTEST_ARGS)

demo: setup
	@scripts/demo.sh

colcon-check: setup
	@scripts/colcon_check.sh
