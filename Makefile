# vla-bench — every user-facing command. `make bench` and `make test` do their own set-up.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
METHOD ?= teacher
SUITE ?= driving
PROFILE ?= smoke
RESULTS ?= results
WORKERS ?= 1
EXECUTOR ?= local
DEVICE ?= cpu
THREADS ?= 1
TEACHER ?=
OUT ?= reports/site
BASELINE ?= results
CANDIDATE ?= results
ARGS ?=
TORCH_PIN := torch==2.13.0

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export SDL_VIDEODRIVER ?= offscreen
export PYTHONUNBUFFERED := 1

# Extras a suite needs, from its id (libero_object-v1 -> libero, driving_merge-v1 -> driving, ...).
suite_extra = $(strip $(if $(findstring libero,$(1)),libero)$(if $(findstring driving,$(1)),driving)$(if $(findstring simpler,$(1)),simpler))
# ... plus ray for EXECUTOR=ray and server for METHOD=remote (docs/scaleout.md)
space := $(empty) $(empty)
run_extras = $(strip $(call suite_extra,$(SUITE)) $(if $(filter ray,$(EXECUTOR)),ray) $(if $(filter remote%,$(METHOD)),server))
EXTRAS ?= $(subst $(space),$(comma),$(run_extras))
# Extras the test suite exercises (simulator tests skip cleanly when an extra is missing).
TEST_EXTRAS ?= driving,libero,server,ray,simpler,openvla,smolvla
comma := ,
STAMP = $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)-$(subst $(comma),_,$(or $(EXTRAS),core))

.PHONY: setup bench profile report gate test test-all clean bench-harness demos teacher list paper-tables report-screenshot
.DEFAULT_GOAL := help

help:
	@echo "make bench [METHOD=$(METHOD)] [SUITE=$(SUITE)] [PROFILE=$(PROFILE)] [RESULTS=$(RESULTS)] [WORKERS=1] [EXECUTOR=local] [DEVICE=cpu]"
	@echo "make test | make profile | make report | make gate | make list | make setup [SUITE=...] | make clean"

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Idempotent: a stamp per (pyproject hash, extras); near-instant when nothing changed.
$(STAMP): | $(VENV)/bin/python
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e ".[dev$(if $(EXTRAS),$(comma)$(EXTRAS))]" $(TORCH_PIN)
	@if [ -n "$(findstring libero,$(EXTRAS))" ]; then bash scripts/fix_opencv.sh $(BIN); fi
	@if [ -n "$(findstring simpler,$(EXTRAS))" ]; then bash scripts/install_system_deps.sh && bash scripts/fix_opencv.sh $(BIN); fi  # Vulkan (Mesa lavapipe) for SAPIEN; headless cv2
	@if [ -n "$(findstring libero,$(EXTRAS))" ]; then bash scripts/install_system_deps.sh libero || echo "warning: libosmesa6 not installed (only MUJOCO_GL=osmesa needs it; EGL is the default)" >&2; fi
	@touch $@

setup: $(STAMP)

list: setup
	$(BIN)/vla-bench list

bench: setup
	$(BIN)/vla-bench bench --method $(METHOD) --suite $(SUITE) --profile $(PROFILE) --results $(RESULTS) \
	  --workers $(WORKERS) --executor $(EXECUTOR) --device $(DEVICE) --threads $(THREADS) \
	  $(if $(TEACHER),--teacher $(TEACHER)) $(ARGS)

profile: setup
	$(BIN)/vla-bench profile --method $(METHOD) --suite $(SUITE) --results $(RESULTS) --device $(DEVICE) \
	  --threads $(THREADS) $(if $(TEACHER),--teacher $(TEACHER)) $(ARGS)

report: setup
	$(BIN)/vla-bench report --results $(RESULTS) --out $(OUT) $(ARGS)

paper-tables: setup
	$(BIN)/vla-bench paper-tables --results $(RESULTS) --out $(OUT) $(ARGS)

gate: setup
	$(BIN)/vla-bench gate --baseline $(BASELINE) --candidate $(CANDIDATE) $(ARGS)

# PNG of the report's index page for the README (headless Chromium; scripts/install_chromium.sh installs it).
report-screenshot: report
	$(BIN)/vla-bench report-screenshot --site $(OUT) --out docs/report.png

# The README's test command: fast tests (< ~15 min); simulator tests run when their extra is installed.
test:
	@$(MAKE) --no-print-directory setup EXTRAS=$(TEST_EXTRAS)
	$(BIN)/python -m pytest -q $(ARGS)

# Reference teacher: behaviour cloning on the suite's expert demos (resumable; rerun to continue).
HEAD ?=
teacher: setup
	$(BIN)/python -m methods.reference.train --suite $(SUITE) $(if $(HEAD),--head $(HEAD)) $(ARGS)

# Expert demonstrations, dispatched by SUITE to suites/<folder>/demos.py (SUITE=driving -> python -m suites.driving.demos).
demos: setup
	$(BIN)/python -m suites.$$($(BIN)/python -c "import sys; from harness.plugins import SUITES; n = sys.argv[1]; n = n if n in SUITES else n + '-v1'; print(SUITES.entry(n).entry_point.split('.')[1])" $(SUITE)).demos --suite $(SUITE) $(ARGS)

bench-harness: setup
	$(BIN)/python benchmarks/harness_overhead.py $(ARGS)

clean:
	rm -rf .cache .pytest_cache reports/site build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
