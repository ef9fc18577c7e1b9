# Everything on a fresh machine: `make bench` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench test setup clean paper paper-ci

bench: $(STAMP)
	$(BIN)/python bench.py engine=semipd

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# Performance-regression gate. Simulated runs are deterministic: the fixed matrix
# (benchmarks/regress_matrix.py) must reproduce results/baselines/sim.json exactly. Real-engine
# timings are an A/B in one run: the commit in results/baselines/torch.json, checked out into a
# temporary worktree, measured beside this tree, interleaved (benchmarks/torch_ab.py). The
# fidelity gate runs the simulator against the real engine on this machine, profiled in the same
# run, within the limits of results/baselines/fidelity.json (benchmarks/fidelity_gate.py). All
# parts always run; the target fails if any fails.
REGRESS_DIR := results/regress/latest
AB_DIR := results/regress/torch_ab
FIDELITY_DIR := results/regress/fidelity
.PHONY: regress regress-aa regress-fidelity-aa baseline

regress: $(STAMP)
	@status=0; \
	$(BIN)/python benchmarks/regress_matrix.py --out $(REGRESS_DIR) && \
	  $(BIN)/python -m metrics.compare $(REGRESS_DIR) results/baselines || status=1; \
	$(BIN)/python benchmarks/torch_ab.py --out $(AB_DIR) || status=1; \
	$(BIN)/python benchmarks/fidelity_gate.py --out $(FIDELITY_DIR) || status=1; \
	exit $$status

# The A/B gate's noise: this tree as both sides, 20 whole gates (README, "Regression gate").
regress-aa: $(STAMP)
	$(BIN)/python benchmarks/torch_ab.py --aa --gates 20 --out results/regress/torch_aa

# The fidelity gate's noise: 6 whole gates (README, "Fidelity gate"), ~30 min.
regress-fidelity-aa: $(STAMP)
	$(BIN)/python benchmarks/fidelity_gate.py --aa 6 --out results/regress/fidelity_aa

# Accept new simulated numbers, and record HEAD as the real-engine baseline commit (which
# needs a committed tree: commit the code first, then `make baseline`, then commit the baselines).
baseline: $(STAMP)
	$(BIN)/python benchmarks/regress_matrix.py --out $(REGRESS_DIR)
	$(BIN)/python -m metrics.compare $(REGRESS_DIR) results/baselines --accept
	$(BIN)/python benchmarks/torch_ab.py --accept

setup: $(STAMP)

# The semi-PD paper's evaluation on the simulator: figures + REPORT.md in results/paper/.
# LAUNCHER=basic (default) runs two experiments at a time on this machine;
# LAUNCHER=ray runs it on a local Ray instance; PAPER_ARGS="--launcher-override
# hydra.launcher.ray.init.address=auto" on a cluster (README, "Sweeps on a Ray cluster").
LAUNCHER ?= basic
PAPER_ARGS ?=
paper: $(STAMP)
	$(BIN)/python -m paper.suite --launcher $(LAUNCHER) $(PAPER_ARGS)

paper-ci: $(STAMP)
	$(BIN)/python -m paper.suite --scale ci --launcher $(LAUNCHER) $(PAPER_ARGS)

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
	$(BIN)/pip install -q -e '.[test,hf,serve,cluster]'
	$(BIN)/python -m engines.torch.cpu_kernels   # build the C++ kernels (~15 s; optional)
	touch $(STAMP)

clean:
	rm -rf $(VENV) results/multirun outputs
