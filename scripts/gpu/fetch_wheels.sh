#!/usr/bin/env bash
# Download, into .whl/ at the repo root, the wheels the GPU machine lacks (it has no network):
# the llava host's pins for its Python 3.12 (x86-64, manylinux). Run here, where PyPI works;
# `run` carries .whl (name it in `carry`), scripts/gpu/run.sh installs them with --no-deps.
#   bash scripts/gpu/fetch_wheels.sh
# This project itself is not fetched: run.sh builds its wheel there from the tree that
# travels, so the GPU always runs the code of the call, never a stale wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The wheel set, one pin a line; run.sh checks the same names (keep them in step).
WHEELS=(
  transformers==4.37.2      # the llava host's version (the image has 5.x)
  tokenizers==0.15.2        # transformers 4.37.2 wants <0.19; cp312 manylinux build
  huggingface_hub==0.36.2   # transformers 4.37.2 wants <1.0 (the image has 1.x); the version CI tests
  llava-torch==1.2.2.post1  # haotian-liu/LLaVA, pure Python
  shortuuid==1.0.13         # llava's eval runners
)
PY=${PYTHON:-python3}
exclude=$(git rev-parse --git-common-dir)/info/exclude
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"   # never committed
mkdir -p .whl
for pin in "${WHEELS[@]}"; do
  "$PY" -m pip download -qq --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
# One version of each name: two would stop the install there.
names=$(ls .whl/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort)
dups=$(uniq -d <<<"$names")
[ -z "$dups" ] || { echo "error: .whl/ holds several versions of: $dups (delete the old ones)" >&2; exit 1; }
ls -l .whl/*.whl | awk '{printf "%8.1f MiB  %s\n", $5 / 1048576, $NF}'
du -sh .whl | awk '{print "total " $1 " (the travelling tree must stay under 64 MiB)"}'
