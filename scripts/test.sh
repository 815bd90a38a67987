#!/usr/bin/env bash
# Lint, type-check (strict on the framework-free core) and build the docs, then run the whole
# test suite (both backends, distributed tests included) on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=2}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy --strict src/frostline/core
# The documentation site, strict: a broken link, anchor or API reference fails the run.
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
