# The two commands of the README: `make demo` and `make test`. Everything they need is built
# here the first time (system tools, virtualenv, ROS 2 wheels, messages, the package) and only
# rebuilt when its inputs change.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
STAMP := $(VENV)/.stamps
MSGS := $(wildcard msg/*.msg)
PYTEST_ARGS ?=

.PHONY: all setup demo test perf lint clean help
all: setup

help:
	@echo "make demo   build everything, run the four nodes on a synthetic scenario, print a report"
	@echo "make test   build everything, run the whole test suite"
	@echo "make lint   ruff"

setup: $(STAMP)/kernels

# python3 -m venv, cmake and g++ are all the machine needs; redis-server serves the fleet-cache
# test (skipped without it). Install what is missing with apt-get.
$(STAMP)/system:
	@missing=""; \
	command -v cmake >/dev/null || missing="$$missing cmake"; \
	command -v g++ >/dev/null || missing="$$missing g++"; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv python3-dev"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
	    || { command -v cmake >/dev/null && command -v g++ >/dev/null || exit 1; echo "warning: could not install$$missing"; }; \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/deps: requirements.txt $(STAMP)/system
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

# Messages: rosidl via cmake, installed into the venv prefix so nothing needs to be sourced.
# The wheels install into the venv itself, so the venv is both AMENT_PREFIX_PATH and prefix.
$(STAMP)/msgs: $(MSGS) CMakeLists.txt package.xml $(STAMP)/deps
	@mkdir -p build/msgs
	cd build/msgs && AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake ../.. -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DINSTALL_PYTHON_PACKAGE=OFF -DBUILD_TESTING=OFF >cmake.log \
	  && $(MAKE) --no-print-directory -j2 install >build.log || { tail -40 cmake.log build.log; exit 1; }
	@# rosidl's empty package __init__ would hide the source tree's (which extends __path__), and
	@# its egg-info would let pip's editable install below uninstall the generated messages.
	rm -rf $(SITE)/intent_perf_ros/__init__.py $(SITE)/intent_perf_ros-*.egg-info
	@touch $@

$(STAMP)/package: setup.py $(STAMP)/msgs
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
	  -e . --config-settings editable_mode=compat
	@touch $@

# The numba kernels of the MPC, the belief tracker and the GP predictor (with its track histories and
# input sanitizer) compiled ahead of time (core/aot.py): mpc_node, belief_node and gp_inference_node
# then run without numba and LLVM, about 110-120 MB less RSS each. Without this build they use the
# JIT. Every source compiled into a kernel module is listed (a stale build is never used, but only
# this list makes make rebuild it).
BELIEF_KERNELS := $(addprefix intent_perf_ros/core/belief/,bayes.py particles.py model.py layout.py resample.py rng.py)
GP_KERNELS := intent_perf_ros/core/gp/loops.py $(addprefix intent_perf_ros/core/,input_kernels.py cdr.py sharding.py)
KERNELS := intent_perf_ros/core/mpc/kernels.py $(BELIEF_KERNELS) $(GP_KERNELS) intent_perf_ros/core/aot.py
$(STAMP)/kernels: $(KERNELS) $(STAMP)/package
	$(VENV)/bin/intent-perf build-kernels
	@touch $@

demo: setup
	$(VENV)/bin/intent-perf demo --json out/demo_report.json

# The suite, then the CI variant of the performance gate (about half a minute; timings are
# normalised by a reference computation and re-measured before a regression is called).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)
	$(VENV)/bin/intent-perf perf --short --baseline perf/baseline.json --json out/perf_short.json

perf: setup
	$(VENV)/bin/intent-perf perf --json out/perf.json

lint: setup
	$(VENV)/bin/ruff check intent_perf_ros test launch

clean:
	rm -rf build out $(VENV) *.egg-info
	find intent_perf_ros -name '_aot_*.so' -delete
