# Everything on a fresh machine: `make bench` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench test setup clean

bench: $(STAMP)
	$(BIN)/python bench.py engine=semipd

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

setup: $(STAMP)

# torch is pinned to 2.13.0 so pip takes the CPU wheel on this machine instead of a
# multi-GB CUDA build; uv/poetry cannot see that wheel, hence pip.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,hf]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) results/multirun outputs
