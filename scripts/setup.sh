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
  echo "setup: installing into .venv (CPU torch, transformers 4.37.2, llava-torch without its pins) ..." >&2
  . .venv/bin/activate
  # -qq: errors only (pip's warnings about this machine's index folders are not ours to fix).
  pip_install() { python -m pip install -qq --disable-pip-version-check "$@"; }
  pip_install --upgrade pip
  # A CPU torch first, so nothing below pulls a multi-GB CUDA build.
  python -c "import torch" 2>/dev/null || pip_install "torch==${TORCH_VERSION:-2.13.0}"
  # (re-run after a change: take the no-deps packages out first, so pip has no pins to warn about)
  python -m pip uninstall -qq -y llava-torch lmms-eval 2>/dev/null || true
  pip_install -e ".[test,lmms]"
  # Last and without dependencies. llava-torch pins torch 2.0.1 / transformers 4.36.2 /
  # gradio / bitsandbytes, none of which inference needs; lmms-eval (`--model llava_star`)
  # asks for transformers>=4.39.2, and setup.py's "lmms" extra has what it needs at versions
  # that keep transformers 4.37.2. Installed before the others, every later install would
  # print pip's red "dependency resolver" block about those pins.
  pip_install --no-deps "llava-torch==1.2.2.post1" "lmms-eval==${LMMS_EVAL_VERSION:-0.7.3}"
  echo "$want" > "$stamp"
  echo "setup: done" >&2
fi
