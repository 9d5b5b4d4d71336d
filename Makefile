# One entry point for people and CI. Every target makes its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,openvino
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: help venv serve upscale test test-fast lint bench clean

help:
	@echo "make serve    - run the service (API + embedded Redis + a worker) with the default model"
	@echo "make test     - install everything and run the whole test suite"
	@echo "make upscale IN=photo.png [OUT=out.png] - upscale one file locally"
	@echo "make bench    - engine benchmark (bench/engine.py)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/srgan serve

upscale: $(STAMP)
	$(BIN)/srgan upscale $(IN) $(if $(OUT),-o $(OUT),)

test:
	$(MAKE) EXTRAS=cpu,openvino,train,dev venv
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -ra

test-fast:
	$(MAKE) EXTRAS=cpu,openvino,dev venv
	$(BIN)/python -m pytest -q -m "not e2e" --ignore=tests/unit/training

lint:
	$(BIN)/lint-imports

bench:
	$(MAKE) EXTRAS=cpu,openvino,dev venv
	$(BIN)/python -m bench.engine

clean:
	rm -rf $(VENV) .pytest_cache
