# One entry point for people and CI. Every target makes its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= cpu,openvino
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

LOCK ?= requirements/ci.lock

# Where the import extra's torch comes from: its CPU-only build. PyPI's torch for Linux is the CUDA build and pulls
# ~5.8 GB of nvidia-* libraries that `srgan import` never uses; the lock pins torch==2.13.0+cpu. This project's
# machines and CI keep that wheel in /opt/wheels (--find-links); elsewhere PyTorch's CPU index serves it
# (--extra-index-url). TORCH_FIND_LINKS=DIR names another folder; TORCH_FIND_LINKS= (empty) uses the index.
TORCH_FIND_LINKS ?= $(wildcard /opt/wheels)
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE = $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS),--extra-index-url $(TORCH_INDEX_URL))
PIP_TORCH = $(if $(filter import,$(subst $(comma), ,$(EXTRAS))),$(TORCH_SOURCE))
UV_TORCH = $(if $(TORCH_FIND_LINKS),$(TORCH_SOURCE),$(TORCH_SOURCE) --index-strategy unsafe-best-match)
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml -q --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"

.PHONY: help venv serve upscale test test-fast lint bench lock audit clean

help:
	@echo "make serve [PORT=8000] - run the service (API + embedded Redis + a worker) with the default model"
	@echo "make test     - install everything, run the linters (make lint), then the whole test suite"
	@echo "make venv EXTRAS=cpu,openvino,import - an environment with these extras (import: srgan import's torch and spandrel)"
	@echo "make lint     - import contracts (lint-imports), ruff check and mypy"
	@echo "make upscale IN=photo.png [OUT=out.png] - upscale one file locally"
	@echo "make bench    - engine benchmark (srgan bench engine)"
	@echo "make lock     - regenerate requirements/*.lock after changing pyproject.toml"
	@echo "make audit    - check the locked versions against known advisories (pip-audit)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Versions come from the lock (as constraints: only the extras asked for are installed). One stamp per set of
# extras; an environment installed since the last change of pyproject.toml and the lock with a superset of them
# (make test's cpu,openvino,train,dev for make serve's cpu,openvino) already has what is asked: nothing to install.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	@for stamp in $(VENV)/.installed-*; do \
	  [ -f "$$stamp" ] && [ "$$stamp" -nt pyproject.toml ] && [ "$$stamp" -nt $(LOCK) ] || continue; \
	  have=" $$(echo "$${stamp##*/.installed-}" | tr - ' ') "; missing=; \
	  for extra in $(subst $(comma), ,$(EXTRAS)); do \
	    case "$$have" in *" $$extra "*) ;; *) missing=1 ;; esac; \
	  done; \
	  if [ -z "$$missing" ]; then echo "$(VENV) has the extras $(EXTRAS) already ($$stamp)"; touch $@; exit 0; fi; \
	done; \
	echo "$(BIN)/python -m pip install --quiet -c $(LOCK) $(PIP_TORCH) -e '.[$(EXTRAS)]'"; \
	$(BIN)/python -m pip install --quiet -c $(LOCK) $(PIP_TORCH) -e '.[$(EXTRAS)]' && touch $@

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/srgan serve $(if $(PORT),--port $(PORT),)

upscale: $(STAMP)
	$(BIN)/srgan upscale $(IN) $(if $(OUT),-o $(OUT),)

test:
	$(MAKE) EXTRAS=cpu,openvino,train,dev,reference,import venv
	$(MAKE) lint
	$(BIN)/python -m pytest -q -ra

test-fast:
	$(MAKE) EXTRAS=cpu,openvino,dev venv
	$(BIN)/python -m pytest -q -m "not e2e" --ignore=tests/unit/training

# The import contracts, ruff check and mypy (settings in pyproject.toml; mypy's cache is in the venv).
lint:
	$(MAKE) EXTRAS=cpu,openvino,train,dev venv
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/vulture

bench:
	$(MAKE) EXTRAS=cpu,openvino,dev venv
	$(BIN)/srgan bench engine

# The lock files: the API image (hashes), the CPU worker image (hashes), the GPU worker image (Python 3.10,
# hashes), CI and `make venv`. The images keep jobs' files in S3 too (docker-compose.yml), hence the s3 extra. CI's
# lock has the import extra with torch's CPU build (TORCH_SOURCE), never PyPI's CUDA one and its nvidia-* packages.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv>=0.5,<1"
	$(UV_COMPILE) --python-version 3.11 --generate-hashes --extra s3 -o requirements/api.lock
	$(UV_COMPILE) --python-version 3.11 --generate-hashes --extra cpu --extra openvino --extra s3 -o requirements/worker-cpu.lock
	$(UV_COMPILE) --python-version 3.10 --generate-hashes --extra gpu --extra s3 -o requirements/worker-gpu.lock
	$(UV_COMPILE) --python-version 3.11 --extra cpu --extra openvino --extra train --extra dev --extra s3 --extra reference --extra nncf --extra import $(UV_TORCH) -o requirements/ci.lock

# Known advisories in the locked versions (needs the PyPI JSON API or OSV to be reachable).
audit: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "pip-audit>=2.7,<3"
	for lock in requirements/*.lock; do $(BIN)/pip-audit --no-deps --disable-pip -r $$lock || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
