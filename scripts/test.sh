#!/usr/bin/env bash
# Lint and type-check (strict on the framework-free core), then run the whole test suite (both backends, distributed tests included) on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=2}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy --strict src/frostline/core
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
