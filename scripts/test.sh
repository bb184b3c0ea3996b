#!/usr/bin/env bash
# The whole test suite (CPU, offline, tiny checkpoints built on the fly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -q "$@"
