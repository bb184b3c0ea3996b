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
  . .venv-hf/bin/activate
  python -m pip install -q --upgrade pip >/dev/null
  # A CPU torch first, so nothing below pulls a multi-GB CUDA build.
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  python -m pip install -q "transformers==${TRANSFORMERS_HF}" accelerate sentencepiece protobuf \
    pillow numpy tqdm pytest scikit-image
  # this package without its install_requires (they pin transformers 4.37.2 for llava)
  python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
