#!/usr/bin/env bash
# Create .venv-hf (once): the transformers-native host's environment (transformers 5.x,
# no llava-torch), CPU-only. .venv (llava-torch on transformers 4.37.2) is left as it is.
# Re-running is cheap: it reinstalls only when setup.py or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TRANSFORMERS_HF=5.25.0
if [ ! -x .venv-hf/bin/python ]; then
  "$PY" -m venv .venv-hf
fi
stamp=.venv-hf/.llava_star_setup
want=$(cat setup.py scripts/setup_hf.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing into .venv-hf (CPU torch, transformers ${TRANSFORMERS_HF}, no llava-torch) ..." >&2
  . .venv-hf/bin/activate
  # -qq: errors only (pip's warnings about this machine's index folders are not ours to fix).
  pip_install() { python -m pip install -qq --disable-pip-version-check "$@"; }
  pip_install --upgrade pip
  # A CPU torch first, so nothing below pulls a multi-GB CUDA build.
  python -c "import torch" 2>/dev/null || pip_install "torch==${TORCH_VERSION:-2.13.0}"
  pip_install "transformers==${TRANSFORMERS_HF}" accelerate sentencepiece protobuf \
    pillow numpy tqdm pytest scikit-image matplotlib
  # this package without its install_requires (they pin transformers 4.37.2 for llava)
  pip_install --no-deps -e .
  echo "$want" > "$stamp"
  echo "setup: done" >&2
fi
