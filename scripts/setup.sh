#!/usr/bin/env bash
# Create .venv (once) with everything the demo and the tests need, CPU-only.
# Re-running is cheap: it reinstalls only when setup.py or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.llava_star_setup
want=$(cat setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  . .venv/bin/activate
  python -m pip install -q --upgrade pip >/dev/null
  # A CPU torch first, so nothing below pulls a multi-GB CUDA build.
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  # llava-torch pins torch 2.0.1 / gradio / bitsandbytes / timm: take the code only.
  python -m pip install -q --no-deps "llava-torch==1.2.2.post1"
  # lmms-eval (`--model llava_star`): its metadata asks for transformers>=4.39.2, so the code
  # only, then what it needs at versions that keep transformers 4.37.2 (setup.py's "lmms").
  python -m pip install -q --no-deps "lmms-eval==${LMMS_EVAL_VERSION:-0.7.3}"
  python -m pip install -q -e ".[test,lmms]"
  echo "$want" > "$stamp"
fi
