# Everything on a fresh machine: `make bench` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench test setup clean paper paper-ci

bench: $(STAMP)
	$(BIN)/python bench.py engine=semipd

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# Performance-regression gate: run the fixed matrix (benchmarks/regress_matrix.py) and
# compare it with the committed baselines; `baseline` accepts the new numbers on purpose.
REGRESS_DIR := results/regress/latest
.PHONY: regress baseline

# Real-engine timings are noisy on a shared machine: a failing check re-measures the real
# engine once and fails only if the second measurement fails too (simulated runs are
# deterministic, so a simulated change fails both times).
regress: $(STAMP)
	$(BIN)/python benchmarks/regress_matrix.py --out $(REGRESS_DIR)
	$(BIN)/python -m metrics.compare $(REGRESS_DIR) results/baselines || { \
	  echo "re-measuring the real engine once ..."; \
	  $(BIN)/python benchmarks/torch_regress.py --out $(REGRESS_DIR) --repeats 5 > /dev/null && \
	  $(BIN)/python -m metrics.compare $(REGRESS_DIR) results/baselines; }

baseline: $(STAMP)
	$(BIN)/python benchmarks/regress_matrix.py --out $(REGRESS_DIR)
	$(BIN)/python -m metrics.compare $(REGRESS_DIR) results/baselines --accept

setup: $(STAMP)

# The semi-PD paper's evaluation on the simulator: figures + REPORT.md in results/paper/.
paper: $(STAMP)
	$(BIN)/python -m paper.suite

paper-ci: $(STAMP)
	$(BIN)/python -m paper.suite --scale ci

# vLLM's CPU build in its own venv, for benchmarks/peer/ only (never a project dependency).
.PHONY: vllm-venv
vllm-venv:
	PY=$(PY) bash benchmarks/peer/make_vllm_venv.sh .venv-vllm

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
