# Two commands for a fresh machine:
#   make up    install, build the llama.cpp engine, start the gateway on the built-in models
#   make test  install (with test tools), build the engine, run the whole test suite
VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch; installed before the package so pip does not pull a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
GF := $(VENV)/bin/genfoundry

.PHONY: up test install install-test engine bench clean

$(VENV)/.base: pyproject.toml src/genfoundry/models/engine_build.py
	@echo "[setup 1/3] virtual environment, torch (CPU build), cmake and ninja from PyPI (about 1 minute)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" cmake ninja
	@echo "[setup 2/3] llama.cpp, compiled once for both engines (about 7 minutes on 2 cores; seconds when cached)"
	$(PY) src/genfoundry/models/engine_build.py
	@echo "[setup 3/3] genfoundry and its dependencies (about 4 minutes, most of it downloads)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	@echo "[setup] the test tools (about 1 minute)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.base
install-test: $(VENV)/.test

engine: $(VENV)/.base
	$(GF) engine build

up: install engine
	$(GF) up

test: install-test engine
	$(PY) -m pytest -q -p no:cacheprovider

bench: install engine
	$(GF) bench gateway

clean:
	rm -rf $(VENV) .pytest_cache
