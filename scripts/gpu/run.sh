#!/usr/bin/env bash
# The GPU benchmark of issue 16 in one call (see BENCHMARKS.md, "GPU"):
#   bash scripts/gpu/run.sh                  # on the GPU machine: wheels from .whl/, results into $OUT
#   bash scripts/gpu/run.sh --rehearse       # here, on the CPU: the same steps at tiny geometry, .venv
#   bash scripts/gpu/run.sh --rehearse --quick   # the same, one budget per method (tests/test_gpu_script.py)
# Options: --only STEP,...  (setup always runs), --deadline SECONDS (default 420 on the GPU),
#          --repeats N (instead of sizing them to the deadline), --dry-run (print each step's
#          command, run nothing). The rehearsal's Python: $LLAVA_STAR_PYTHON, else .venv/bin/python.
# Steps: setup    install .whl/ + this project's wheel into /tmp/site (PYTHONPATH shadows the image's
#                 transformers 5 / tokenizers / huggingface_hub 1.x); versions (nvidia-smi, torch, CUDA, driver)
#        checks   cached = uncached and batch = single for star@58 on the tiny checkpoint (fp16 on CUDA)
#        checks_all  the same for every other method (reported; does not decide the exit status)
#        batch    batch 8 throughput: none, star@58, fastervlm@58; its times size the repeats below
#        bench    7B geometry, random fp16 weights: stock, none, star/fastv/fastervlm/pdrop/random at
#                 288/115/58/29, round-robin, CUDA events, 32 new tokens, profile of star@58
#        published  sparsevlm and visionzip at their published budgets 192/128/64 (with stock and none)
# $OUT gets at most 5 files: log.txt, summary.md, bench.md, bench.csv (the 7B run) and results.tar
# (every step's outputs). summary.md and results.tar are rewritten after each step, so a run cut
# short still brings back what it finished.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }
MODE=gpu QUICK=0 DRY=0 ONLY="" DEADLINE="" REPEATS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) MODE=rehearse ;;
    --quick) QUICK=1 ;;
    --dry-run) DRY=1 ;;
    --only) ONLY=${2:?--only needs a list of steps}; shift ;;
    --only=*) ONLY=${1#*=} ;;
    --deadline) DEADLINE=${2:?--deadline needs seconds}; shift ;;
    --deadline=*) DEADLINE=${1#*=} ;;
    --repeats) REPEATS=${2:?--repeats needs a number}; shift ;;
    --repeats=*) REPEATS=${1#*=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
STEPS="checks checks_all batch bench published"
for s in ${ONLY//,/ }; do
  [[ " setup $STEPS " == *" $s "* ]] || { echo "error: --only: unknown step $s (steps: setup $STEPS)" >&2; exit 2; }
done
[[ -z "$DEADLINE" || "$DEADLINE" =~ ^[0-9]+$ ]] || { echo "error: --deadline must be seconds, got $DEADLINE" >&2; exit 2; }
[[ -z "$REPEATS" || "$REPEATS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --repeats must be >= 1, got $REPEATS" >&2; exit 2; }
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# ------------------------------------------------------------------ parameters
CHECK_METHOD=star@58
CHECK_OTHERS=fastv@58,fastervlm@58,pdrop@58,random@58,sparsevlm@64,visionzip@64
MAIN_METHODS=star,fastv,fastervlm,pdrop,random
MAIN_BUDGETS=288,115,58,29
PUB_METHODS=sparsevlm,visionzip   # their published schedules only (bench skips other budgets for sparsevlm)
PUB_BUDGETS=192,128,64
BATCH=8 BATCH_METHODS=star,fastervlm BATCH_BUDGETS=58
PROFILE=star@58
if [ "$MODE" = gpu ]; then
  PY=python3 GEOM=llava-v1.5-7b DEVICE=cuda DTYPE=float16 NEW=32 WARMUP=2 RMIN=3 RMAX=10
  BATCH_WARMUP=2 BATCH_REPEATS=5 CHECK_TOKENS=8 SCORING=3 AB=10 THREADS=()
  DEADLINE=${DEADLINE:-420} BENCH_OVERHEAD=45   # seconds per 7B bench process besides its timed rounds
  [ -n "${OUT:-}" ] || [ "$DRY" = 1 ] || { echo "error: \$OUT is not set (the device tool sets it; or export OUT=folder)" >&2; exit 2; }
else
  PY=${LLAVA_STAR_PYTHON:-$REPO/.venv/bin/python} GEOM=tiny DEVICE=cpu DTYPE=float32 NEW=4 WARMUP=1 RMIN=1 RMAX=2
  BATCH_WARMUP=0 BATCH_REPEATS=1 CHECK_TOKENS=6 SCORING=1 AB=2 THREADS=(--threads 2)
  DEADLINE=${DEADLINE:-3600} BENCH_OVERHEAD=20
  OUT=${OUT:-$REPO/results/gpu-rehearsal}
  [ -x "$PY" ] || [ "$DRY" = 1 ] || { echo "error: no $PY (run bash scripts/setup.sh first)" >&2; exit 2; }
  if [ "$QUICK" = 1 ]; then
    NEW=2 WARMUP=0 RMAX=1 MAIN_BUDGETS=58 PUB_BUDGETS=64 CHECK_TOKENS=4 AB=1
  fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       HF_HUB_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$DRY" = 1 ]; then
  OUT=${OUT:-/tmp/OUT} WORK=/tmp/llava_star_gpu.DRYRUN
else
  mkdir -p "$OUT" || exit 2
  OUT=$(cd "$OUT" && pwd)
  rm -f "$OUT"/log.txt "$OUT"/summary.md "$OUT"/bench.md "$OUT"/bench.csv "$OUT"/results.tar
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/llava_star_gpu.XXXXXX")   # every step's outputs; packed into results.tar
  WHEELDIR=$(mktemp -d "${TMPDIR:-/tmp}/llava_star_wheel.XXXXXX")
  exec > >(tee -a "$OUT/log.txt") 2>&1
  TEE=$!
  # at the end: let tee write the last lines before the call returns; the outputs are in results.tar
  trap 'rm -rf "$WORK" "$WHEELDIR"; exec >&- 2>&-; wait $TEE 2>/dev/null' EXIT
fi
T0=$SECONDS
left() { echo $((DEADLINE - (SECONDS - T0))); }
echo "== scripts/gpu/run.sh ($MODE$([ "$QUICK" = 1 ] && echo ", quick")), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), deadline ${DEADLINE} s"
echo "   commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"

FAILED=()   # steps that decide the exit status
pack() {  # summary and the tar after every step, so a cut-short run still returns its results
  [ "$DRY" = 1 ] && return 0
  "$PY" "$REPO/scripts/gpu/report.py" summary "$WORK" > "$OUT/summary.md" 2>>"$WORK/report_errors.txt" \
    || echo "warning: report.py summary failed (see results.tar: report_errors.txt)"
  [ -f "$WORK/main/bench.md" ] && cp "$WORK/main/bench.md" "$OUT/bench.md"
  [ -f "$WORK/main/bench.csv" ] && cp "$WORK/main/bench.csv" "$OUT/bench.csv"
  tar -cf "$OUT/results.tar" -C "$WORK" . 2>/dev/null
}
# run_step NAME LIMIT_SECONDS GATING(1/0) CMD...: time-boxed, logged in $WORK/status.tsv
run_step() {
  local name=$1 limit=$2 gating=$3; shift 3
  if [ "$DRY" = 1 ]; then printf '%s:' "$name"; printf ' %q' "$@"; echo; return 0; fi
  local budget=$(( $(left) - 20 ))   # 20 s kept for the summary and the tar
  [ "$limit" -gt "$budget" ] && limit=$budget
  if [ "$limit" -lt 15 ]; then
    echo "== $name: SKIPPED, ${budget} s left before the deadline"
    printf '%s\tskipped\t0\t%s\n' "$name" "$*" >> "$WORK/status.tsv"
    [ "$gating" = 1 ] && FAILED+=("$name")
    pack; return 1
  fi
  echo "== $name (at most ${limit} s): $*"
  local t=$SECONDS rc
  timeout --kill-after=15 "$limit" "$@"; rc=$?
  [ $rc = 124 ] && echo "== $name: TIMED OUT after ${limit} s"
  echo "== $name: rc $rc, $((SECONDS - t)) s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t))" "$*" >> "$WORK/status.tsv"
  [ $rc != 0 ] && [ "$gating" = 1 ] && FAILED+=("$name")
  pack
  return $rc
}

# ----------------------------------------------------------------------- setup
WHEEL_NAMES="transformers tokenizers huggingface_hub llava_torch shortuuid"   # = scripts/gpu/fetch_wheels.sh
check_wheels() {  # exactly one wheel of each name
  local n c
  for n in $WHEEL_NAMES; do
    c=$(ls "$REPO"/.whl/"$n"-*.whl 2>/dev/null | wc -l)
    [ "$c" = 1 ] || { echo "error: .whl/ has $c wheels of $n, needs 1 (bash scripts/gpu/fetch_wheels.sh here, and carry .whl)"; return 1; }
  done
}
install_site() {  # SITE [pip's target-platform flags...]: wheels + this project's wheel (built from the tree that travelled)
  local site=$1; shift
  # built from a copy: an in-tree build would leave build/ behind, whose stale files a later wheel would ship
  rm -rf "$WHEELDIR"/* && mkdir "$WHEELDIR/src" && cp -r "$REPO"/setup.py "$REPO"/llava_star "$REPO"/patches "$WHEELDIR/src/" &&
  "$PY" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$WHEELDIR" "$WHEELDIR/src" &&
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$@" \
      "$REPO"/.whl/*.whl "$WHEELDIR"/llava_star-*.whl || return 1
  # what the target holds, read from its files (the rehearsal cannot import a cp312 build)
  grep -q '^__version__ = "4.37.2"' "$site/transformers/__init__.py" &&
  ls -d "$site"/tokenizers-0.15.2.dist-info "$site"/huggingface_hub-0.*.dist-info "$site"/llava_torch-1.2.2.post1.dist-info \
        "$site"/llava_star-*.dist-info "$site"/llava_star/patches/__init__.py >/dev/null ||
    { echo "error: $site lacks a wheel's files"; return 1; }
  echo "installed into $site: $(ls -d "$site"/*.dist-info | xargs -n1 basename | tr '\n' ' ')"
}
versions() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not here ($MODE)"
  fi
  "$PY" - <<'EOF'
import importlib.metadata as md, os, platform, sys
import torch, transformers, tokenizers, huggingface_hub, llava, llava_star
print(f"python {platform.python_version()} ({sys.executable}), {platform.machine()}, {os.cpu_count()} CPUs")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
      + (f", capability {torch.cuda.get_device_capability()}" if torch.cuda.is_available() else ""))
for m in (transformers, tokenizers, huggingface_hub, llava, llava_star):
    name = {"llava": "llava-torch", "llava_star": "llava-star"}.get(m.__name__, m.__name__)
    print(f"{m.__name__} {md.version(name)} from {os.path.dirname(m.__file__)}")
want = {"transformers": "4.37.2", "tokenizers": "0.15.2", "llava-torch": "1.2.2.post1"}
bad = [f"{k} {md.version(k)} (want {v})" for k, v in want.items() if md.version(k) != v]
if transformers.__version__ != "4.37.2" or tokenizers.__version__ != "0.15.2":
    bad.append(f"imported transformers {transformers.__version__} / tokenizers {tokenizers.__version__}")
if int(huggingface_hub.__version__.split(".")[0]) >= 1:
    bad.append(f"huggingface_hub {huggingface_hub.__version__} (want < 1.0)")
if bad:
    sys.exit("error: the image's packages were not shadowed: " + "; ".join(bad))
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM  # llava's model code imports
print("versions ok")
EOF
}
setup() {
  if [ "$MODE" = gpu ]; then
    check_wheels && install_site /tmp/site || return 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  elif [ -d "$REPO/.whl" ]; then  # rehearse the same install for the GPU's Python, into a folder left unused
    check_wheels && install_site "$WORK/site" --only-binary=:all: --python-version 3.12 --implementation cp \
        --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 || return 1
    rm -rf "$WORK/site"
  else
    echo "no .whl/ here: the install is not rehearsed (bash scripts/gpu/fetch_wheels.sh first)"
  fi
  versions | tee "$WORK/versions.txt"
}
echo "== setup"
t=$SECONDS
if [ "$DRY" = 1 ]; then echo "setup: (dry run: not installed)"; rc=0; else setup; rc=$?; fi
[ "$DRY" = 1 ] || printf 'setup\t%s\t%s\t%s\n' "$rc" "$((SECONDS - t))" "install + versions" >> "$WORK/status.tsv"
pack
if [ $rc != 0 ]; then echo "== setup failed (rc $rc): stopping"; exit 1; fi
echo "== setup: ok, $((SECONDS - t)) s"

# ---------------------------------------------------------------------- checks
CHECK=("$PY" "$REPO/scripts/gpu/checks.py" --device "$DEVICE" --dtype "$DTYPE" --new-tokens "$CHECK_TOKENS")
wanted checks && run_step checks 180 1 "${CHECK[@]}" --methods "$CHECK_METHOD" --out "$WORK/checks.json"
[ "$QUICK" = 1 ] || { wanted checks_all && run_step checks_all 240 0 "${CHECK[@]}" --methods "$CHECK_OTHERS" --out "$WORK/checks_all.json"; }

# ----------------------------------------------------------------------- bench
BENCH=("$PY" -m llava_star.bench --geometry "$GEOM" --random-weights --device "$DEVICE" --dtype "$DTYPE"
       --new-tokens "$NEW" --quiet ${THREADS[@]+"${THREADS[@]}"})
wanted batch && run_step batch 240 1 "${BENCH[@]}" --batch "$BATCH" --no-stock --methods "$BATCH_METHODS" \
    --budgets "$BATCH_BUDGETS" --warmup "$BATCH_WARMUP" --repeats "$BATCH_REPEATS" --no-scoring --ab-pairs 0 \
    --out-dir "$WORK/batch8"

n_items() { local IFS=,; set -- $1; echo $#; }
ROWS_MAIN=$(( 2 + $(n_items $MAIN_METHODS) * $(n_items $MAIN_BUDGETS) ))
ROWS_PUB=$(( 2 + $(n_items $PUB_METHODS) * $(n_items $PUB_BUDGETS) ))
[ "$DRY" = 1 ] && [ -z "$REPEATS" ] && REPEATS=$RMAX
if [ -z "$REPEATS" ] && { wanted bench || wanted published; }; then   # as many round-robin repeats as the time left allows
  PROCS=0 ROWS=0
  wanted bench && PROCS=$((PROCS + 1)) ROWS=$((ROWS + ROWS_MAIN))
  wanted published && PROCS=$((PROCS + 1)) ROWS=$((ROWS + ROWS_PUB))
  REPEATS=$("$PY" "$REPO/scripts/gpu/report.py" repeats --batch-json "$WORK/batch8/bench.json" --rows "$ROWS" \
      --seconds $(( $(left) - 25 - PROCS * BENCH_OVERHEAD )) --warmup "$WARMUP" --min "$RMIN" --max "$RMAX") || REPEATS=$RMIN
fi
{ wanted bench || wanted published; } && echo "== repeats: $REPEATS round-robin rounds after $WARMUP warm-up runs per row ($ROWS_MAIN + $ROWS_PUB rows)"
wanted bench && run_step bench 540 1 "${BENCH[@]}" --methods "$MAIN_METHODS" --budgets "$MAIN_BUDGETS" \
    --warmup "$WARMUP" --repeats "$REPEATS" --scoring-repeats "$SCORING" --ab-pairs "$AB" --profile "$PROFILE" \
    --out-dir "$WORK/main"
wanted published && run_step published 300 1 "${BENCH[@]}" --methods "$PUB_METHODS" --budgets "$PUB_BUDGETS" \
    --warmup "$WARMUP" --repeats "$REPEATS" --scoring-repeats "$SCORING" --ab-pairs 0 --out-dir "$WORK/published"

pack
[ "$DRY" = 1 ] && exit 0
echo "== done in $((SECONDS - T0)) s; $OUT: $(ls "$OUT" | tr '\n' ' ')"
"$PY" "$REPO/scripts/gpu/report.py" summary "$WORK" --brief   # the whole page is $OUT/summary.md
if [ ${#FAILED[@]} -gt 0 ]; then echo "== FAILED: ${FAILED[*]}"; exit 1; fi
echo "== all steps ok"
