#!/usr/bin/env bash
# The whole test suite (CPU, offline, tiny checkpoints built on the fly): the llava host in
# .venv (llava-torch, transformers 4.37.2), then the hf host in .venv-hf (transformers 5, no
# llava-torch; its cross-host test also runs .venv). Arguments go to the first suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
bash scripts/setup_hf.sh || exit 1
.venv/bin/python -m pytest tests -q "$@"
main=$?
.venv-hf/bin/python -m pytest tests_hf -q
hf=$?
exit $(( main != 0 ? main : hf ))
