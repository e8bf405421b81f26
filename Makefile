# safefql — developer entry points.
#   make setup      create/refresh .venv (idempotent; a no-op when nothing changed)
#   make test       run the test suite in .venv on a private ROS 2 domain
#   make demo       record a boat bag, train SafeFQL from it (fit --bag), run simulator + controller
#                   through DDS for 10 episodes; the last line printed is a JSON summary
#                   (TASK=diffdrive: the same path for the diff-drive robot with a lidar, 5 episodes)
#   make mutation   mutation testing of the safety path (tools/mutation.py; hours, not part of make test)
#   make clean      remove what the README's commands write: data/ runs/ bags/ results/ (keeps .venv)
#   make distclean  clean + remove .venv
# Override variables on the command line, e.g. `make demo SEED=3 RUN=runs/boat3`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Interpreter used to create the venv (the pinned wheels are for CPython 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV   ?= .venv
PY     ?= $(VENV)/bin/python

TASK     ?= boat
SEED     ?= 0
BAG      ?= data/$(TASK)_bag
RUN      ?= runs/$(TASK)
# The robots `make demo` runs, and what differs between them: the behaviour code its bag is
# recorded by (a change records the bag again), how many of the fixed starts `evaluate` scores,
# and the closed-loop episodes through DDS, from the first fixed evaluation starts.
DEMO_TASKS := boat diffdrive
BEHAVIOUR_boat      := safefql_core/envs/boat_behaviour.py
BEHAVIOUR_diffdrive := safefql_core/envs/diffdrive_behaviour.py
EPISODES_boat       := 500
EPISODES_diffdrive  := 250
# The boat: 800 steps (4 s) instead of the training horizon's 400: from the north and south
# edges, where the current is slack, the boat needs more than 2 s to reach the goal region.
DEMO_EPISODES_boat  := 10
DEMO_STEPS_boat     := 800
# The diff-drive robot runs in real time at 10 Hz: 5 episodes of 300 steps are 2.5 min.
DEMO_EPISODES_diffdrive := 5
DEMO_STEPS_diffdrive    := 300
# evaluate's task-specific options: the boat's map of trajectories. The decision (the diff-drive
# robot's 16 proposals) is the bundle's, which its node deploys too (safefql_core.decision).
EVAL_ARGS_boat       = --plot $(RUN)/trajectories.png
EVAL_ARGS_diffdrive :=
ifneq ($(filter demo,$(MAKECMDGOALS)),)
ifeq ($(filter $(TASK),$(DEMO_TASKS)),)
$(error make demo: no demo for TASK=$(TASK); TASK is one of: $(DEMO_TASKS))
endif
endif
EPISODES      ?= $(EPISODES_$(TASK))
DEMO_EPISODES ?= $(DEMO_EPISODES_$(TASK))
DEMO_STEPS    ?= $(DEMO_STEPS_$(TASK))
# Both cores for the one training job of the demo (tests and benchmarks use 1).
THREADS  ?= 2
PYTEST_ARGS ?=
# Extra pip options, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
# on a machine without the local CPU torch wheel (PyPI's torch pulls several GB of CUDA).
PIP_ARGS ?=

# Every pip call is constrained (an unconstrained call can swap the CPU torch for a CUDA one).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The ROS wheels' .pth bootstrapper re-executes python with LD_LIBRARY_PATH set unless this
# guard is already set; an inherited guard (from another venv's python) would skip it.
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE

PIP_INSTALL := $(VENV)/bin/python -m pip -q install $(PIP_ARGS)
# The local find-links/extra-index locations make pip warn once per package that is not
# mirrored there ("Location 'file:///opt/pypi/simple/...' is ignored"): pure noise.
PIP_QUIET := 2>&1 | { grep -v -E "^WARNING: Location '.*' is ignored" || true; }

DEPS_STAMP := $(VENV)/.deps-stamp
DEV_STAMP  := $(VENV)/.dev-stamp
PKG_STAMP  := $(VENV)/.stamp
# Editable installs map top-level packages at install time, so a new top-level package
# (a new */__init__.py) needs a re-install: it is a prerequisite of the stamp.
PKG_INPUTS := setup.py setup.cfg $(wildcard */__init__.py)
SHARE      := $(VENV)/share/safefql_ros

.PHONY: help setup test mutation demo clean distclean

help:
	@sed -n '2,10p' $(firstword $(MAKEFILE_LIST))

setup: $(PKG_STAMP)

$(VENV)/bin/python:
	@echo ">> creating $(VENV) with $(PYTHON) ($$($(PYTHON) -c 'import sys; print(sys.version.split()[0])'))"
	@$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements.txt constraints.txt | $(VENV)/bin/python
	@echo ">> pip install -c constraints.txt -r requirements.txt   (first time ~1 min)"
	@$(PIP_INSTALL) -c constraints.txt -r requirements.txt $(PIP_QUIET)
	@# Their declared pins cannot resolve on Python 3.11: installed without dependencies.
	@echo ">> pip install --no-deps safety-gymnasium==1.0.0 gymnasium-robotics==1.2.2 pettingzoo==1.24.3"
	@$(PIP_INSTALL) -c constraints.txt --no-deps \
	    safety-gymnasium==1.0.0 gymnasium-robotics==1.2.2 pettingzoo==1.24.3 $(PIP_QUIET)
	@touch $@

# setuptools' PEP 660 editable install silently skips data_files (pypa/setuptools#3399),
# so the ament-index marker, package.xml, launch/ and config/ are symlinked into the venv
# prefix instead (like `colcon build --symlink-install`): with AMENT_PREFIX_PATH=.venv,
# get_package_share_directory('safefql_ros') finds live files. Console scripts land in
# .venv/bin ([develop] script_dir only applies to colcon's `setup.py develop`).
$(PKG_STAMP): $(DEPS_STAMP) $(PKG_INPUTS)
	@echo ">> pip install --no-deps -e .   (safefql_core, offline_train, safefql_ros)"
	@$(PIP_INSTALL) -c constraints.txt --no-deps --no-build-isolation -e . $(PIP_QUIET)
	@mkdir -p $(VENV)/share/ament_index/resource_index/packages $(SHARE)
	@ln -sfn "$(CURDIR)/resource/safefql_ros" $(VENV)/share/ament_index/resource_index/packages/safefql_ros
	@for f in package.xml launch config; do rm -rf "$(SHARE)/$$f"; ln -s "$(CURDIR)/$$f" "$(SHARE)/$$f"; done
	@touch $@

# ROS 2 on this machine only; the venv prefix is the ament index.
ROS_ENV := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	AMENT_PREFIX_PATH="$(abspath $(VENV))$${AMENT_PREFIX_PATH:+:$$AMENT_PREFIX_PATH}"
# A domain of its own for the demo; tests/conftest.py allocates the test run's (no collisions
# between concurrent runs) unless ROS_DOMAIN_ID is set.
DEMO_ROS_ENV := $(ROS_ENV) ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 100 + 1 ))}

test: setup
	$(ROS_ENV) $(VENV)/bin/python -m pytest -q tests $(PYTEST_ARGS)

# Developer tools (mutmut, pytest-randomly) on top of the test venv; make test does not need them.
$(DEV_STAMP): requirements-dev.txt constraints.txt $(PKG_STAMP)
	@echo ">> pip install -c constraints.txt -r requirements-dev.txt"
	@$(PIP_INSTALL) -c constraints.txt -r requirements-dev.txt $(PIP_QUIET)
	@touch $@

# Each module of the safety path mutated with its own tests; scores and survivors in
# build/mutation/summary.json, every survivor with its reason in
# docs/notebook/mutation-survivors.md (fails on a survivor without one). MODULES=losses limits the run.
MODULES ?=
mutation: $(DEV_STAMP)
	$(ROS_ENV) $(PY) tools/mutation.py $(MODULES) --explain docs/notebook/mutation-survivors.md

# Recorded again when the behaviour mix changes (the bag is that mix's data).
$(BAG)/metadata.yaml: $(BEHAVIOUR_$(TASK)) | setup
	mkdir -p $(dir $(BAG))
	rm -rf $(BAG)
	$(PY) -m offline_train.collect --task $(TASK) --format bag --seed $(SEED) --out $(BAG)

# fit --task: the bag is converted through config/<task>.yaml's spec (the boat's is built in).
demo: setup $(BAG)/metadata.yaml
	$(PY) -m offline_train.fit --bag $(BAG) --task $(TASK) --out $(RUN) --seed $(SEED) --threads $(THREADS)
	$(PY) -m offline_train.evaluate --bundle $(RUN)/bundle --episodes $(EPISODES) --json $(RUN)/eval.json \
	    $(EVAL_ARGS_$(TASK))
	$(DEMO_ROS_ENV) $(VENV)/bin/safefql-launch $(TASK) --bundle $(RUN)/bundle --episodes $(DEMO_EPISODES) \
	    --init-states evaluation --episode-steps $(DEMO_STEPS) --timeout 600 \
	    --report-dir $(RUN)/report --summary-json $(RUN)/demo_summary.json
	@# The summary again as the very last line (the nodes log their shutdown after the monitor).
	@$(PY) -c "import json; print(json.dumps(json.load(open('$(RUN)/demo_summary.json'))))"

clean:
	rm -rf data runs bags results

distclean: clean
	rm -rf $(VENV) build *.egg-info
