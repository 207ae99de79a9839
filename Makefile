# Skydd: two-command quick start is `make demo` and `make test` (as root on Debian 12).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CACHE := $(CURDIR)/.cache
PYTHON ?= python3
export PIP_CACHE_DIR := $(CACHE)/pip
export SKYDD_CACHE := $(CACHE)
export SKYDD_HOME ?= $(CURDIR)/.skydd

.PHONY: deps demo test unit lab bench lint clean

$(BIN)/.stamp: pyproject.toml
	@echo "== python virtualenv in $(VENV) (wheels cached in .cache/pip)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(CACHE)/.debian-stamp: .ci/debian-packages
	@mkdir -p $(CACHE)
	bash .ci/debian-deps .ci/debian-packages
	touch $@

deps: $(BIN)/.stamp $(CACHE)/.debian-stamp

demo: deps
	$(BIN)/skydd lab demo

test: deps
	$(BIN)/pytest -q -p no:cacheprovider tests

unit: $(BIN)/.stamp
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

bench: deps
	$(BIN)/python -m tests.bench

lint: $(BIN)/.stamp
	$(BIN)/python -m compileall -q policies identity audit skydd tests

clean:
	rm -rf $(VENV) .skydd build *.egg-info
