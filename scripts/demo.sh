#!/usr/bin/env bash
# Baseline vs STAR on the embedded tiny checkpoint and a real photo (CPU, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m llava_star.demo "$@"
