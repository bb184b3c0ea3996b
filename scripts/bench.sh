#!/usr/bin/env bash
# Latency / memory / FLOPs benchmark of every method (see BENCHMARKS.md).
#   bash scripts/bench.sh        # this project's CPU: cpu-mid geometry, 2 threads, star/fastv/fastervlm at 115/58/29
#   bash scripts/bench.sh --geometry llava-v1.5-7b --random-weights --device cuda --dtype float16 \
#        --methods star,fastv,fastervlm,sparsevlm,pdrop --budgets 288,192,128,115,64,58,29 --repeats 10 --warmup 3
#   bash scripts/bench.sh --model-path liuhaotian/llava-v1.5-7b --device cuda
# Flags go to `python -m llava_star.bench` (see --help); results land in results/bench/<model>-<device>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ARGS=("$@")
if ! printf '%s\n' "$@" | grep -qE '^--(geometry|model-path)(=|$)'; then
  ARGS=(--geometry cpu-mid --threads 2 "${ARGS[@]}")
fi
exec .venv/bin/python -m llava_star.bench "${ARGS[@]}"
