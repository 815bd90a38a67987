#!/usr/bin/env bash
# Create .venv with frostline and everything its tests need (torch/torchvision pinned).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q -c requirements/constraints.txt -e ".[torch,jax,zoo,train,demo,dev]"
