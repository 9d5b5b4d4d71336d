# One entry point for people and CI. Every target makes its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,openvino
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

LOCK ?= requirements/ci.lock
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml -q --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"

.PHONY: help venv serve upscale test test-fast lint bench lock audit clean

help:
	@echo "make serve    - run the service (API + embedded Redis + a worker) with the default model"
	@echo "make test     - install everything and run the whole test suite"
	@echo "make upscale IN=photo.png [OUT=out.png] - upscale one file locally"
	@echo "make bench    - engine benchmark (bench/engine.py)"
	@echo "make lock     - regenerate requirements/*.lock after changing pyproject.toml"
	@echo "make audit    - check the locked versions against known advisories (pip-audit)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Versions come from the lock (as constraints: only the extras asked for are installed).
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
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

# The lock files: the API image (hashes), the CPU worker image (hashes), the GPU worker image (Python 3.10,
# hashes), CI and `make venv`. The images keep jobs' files in S3 too (docker-compose.yml), hence the s3 extra.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv>=0.5,<1"
	$(UV_COMPILE) --python-version 3.11 --generate-hashes --extra s3 -o requirements/api.lock
	$(UV_COMPILE) --python-version 3.11 --generate-hashes --extra cpu --extra openvino --extra s3 -o requirements/worker-cpu.lock
	$(UV_COMPILE) --python-version 3.10 --generate-hashes --extra gpu --extra s3 -o requirements/worker-gpu.lock
	$(UV_COMPILE) --python-version 3.11 --extra cpu --extra openvino --extra train --extra dev --extra s3 -o requirements/ci.lock

# Known advisories in the locked versions (needs the PyPI JSON API or OSV to be reachable).
audit: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "pip-audit>=2.7,<3"
	for lock in requirements/*.lock; do $(BIN)/pip-audit --no-deps --disable-pip -r $$lock || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
