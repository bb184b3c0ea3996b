#!/usr/bin/env bash
# The paper's Table 1 sweep: every benchmark x method x budget through scripts/eval/*.sh.
#   bash scripts/reproduce.sh MODEL_PATH [reproduce flags] [-- runner flags]
# e.g. CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/reproduce.sh liuhaotian/llava-v1.5-7b --benchmarks mme,pope,gqa
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: bash scripts/reproduce.sh MODEL_PATH [flags]}"
shift
exec "${PYTHON:-python}" -m llava_star.reproduce --model-path "$model" "$@"
