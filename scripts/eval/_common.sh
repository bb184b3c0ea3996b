# Shared by scripts/eval/<bench>.sh (sourced, not run). The stages follow LLaVA's
# scripts/v1_5/eval/<bench>.sh: run the model (one chunk per GPU), merge, convert/score.
#
#   bash scripts/eval/<bench>.sh MODEL_PATH [runner flags, e.g. --method star --budget 58]
#
# Environment:
#   EVAL_DIR              benchmark workspace, LLaVA's playground/data/eval layout (default: <repo>/eval)
#   CUDA_VISIBLE_DEVICES  one chunk per listed GPU, run in parallel, merged in question order;
#                         unset or empty: one chunk on the runner's default device (cuda if any, else cpu)
#   PYTHON                interpreter (default: `python` of the active environment); a llava-hf
#                         checkpoint (the runners' --host auto picks the hf host) needs .venv-hf/bin/python
#   CKPT                  name of this run's answers (default: <model>_<method>[-b<budget>][-<knob><value>...]);
#                         a --limit N run appends -limit<N>, so a smoke run never writes the full run's files
#   SCORE_ARGS            extra scorer flags, e.g. "--allow-missing"
#   CONV_MODE             conversation template (default: from the model name, llava_star.prompting:
#                         mistral_instruct for *mistral*, chatml_direct for *v1.6-34b*, else vicuna_v1)
#
# LLaVA-NeXT (llava-v1.6-*) checkpoints work the same way; their pruning flags:
#   --budget-unit image|crop   a budget for the whole image (default) or for every 576-patch crop
#   --fixed-grid 672           every image on one 2x2 grid (2880 patch tokens), as the papers compare
# Every runner flag after MODEL_PATH is passed through (later flags win over the script's own,
# e.g. --conv-mode, --temperature 0.2, --max_new_tokens 4, --batch-size 8, --device cpu, --no-resume).
# --limit N: a smoke run of the first N questions, scored with --allow-missing (a partial score).
# Resuming checks the settings recorded with each chunk's answers (the runner refuses others).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python}"
EVAL_DIR="${EVAL_DIR:-$REPO_ROOT/eval}"
# llava_star importable from this checkout even when it is not pip-installed.
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 1
}

usage() {
    cat >&2 <<EOF
usage: bash scripts/eval/$(basename "$0") MODEL_PATH [runner flags...]

  MODEL_PATH     a LLaVA checkpoint directory or hub id (e.g. liuhaotian/llava-v1.5-7b)
  runner flags   passed to the llava_star.eval runner, e.g. --method star --budget 58
                 (see: $PYTHON -m llava_star.eval.model_vqa_loader --help)

LLaVA-NeXT: the same, plus --budget-unit image|crop and --fixed-grid 672 if wanted;
the conversation template follows the model name (set CONV_MODE or pass --conv-mode).

Data: \$EVAL_DIR (now $EVAL_DIR), laid out as in eval/README.md.
--limit N: a smoke run of the first N questions, written as <CKPT>-limit<N>, scored partially.
Env: EVAL_DIR, CUDA_VISIBLE_DEVICES (one chunk per GPU), PYTHON, CKPT, SCORE_ARGS, CONV_MODE.
EOF
}

# ckpt_name MODEL_PATH [flags...]: <model>_<method>[-b<budget>][-<knob><value>...]
ckpt_name() {
    local model="${1%/}"
    shift
    local base
    base="$(basename "$model")"
    if [[ "$base" == checkpoint-* ]]; then
        base="$(basename "$(dirname "$model")")_$base"
    fi
    local method="none" budget="" knobs="" flag val kind
    # the method flags come from the method registry: "value FLAG" / "switch FLAG"
    local -A kinds=([--fixed-grid]=value)
    while read -r kind flag; do kinds[$flag]=$kind; done < <("$PYTHON" -m llava_star.methods --flags)
    while (($#)); do
        flag="$1"
        val=""
        if [[ "$flag" == --*=* ]]; then
            val="${flag#*=}"
            flag="${flag%%=*}"
            shift
        else
            shift
            if [[ "${kinds[$flag]:-}" == value ]] && (($#)); then val="$1"; shift; fi
        fi
        case "$flag" in
            --method) method="$val" ;;
            --budget) budget="$val" ;;
            *) [[ -n "${kinds[$flag]:-}" ]] && knobs+="-${flag#--}${val}" ;;
        esac
    done
    local name="${base}_${method}"
    [[ -n "$budget" ]] && name+="-b${budget}"
    name+="$knobs"
    # keep file names plain: anything but letters, digits, . _ - becomes -
    printf '%s\n' "${name//[^A-Za-z0-9._-]/-}"
}

# default_conv_mode MODEL_PATH: the template for that family of checkpoints, from
# llava_star.prompting (the one rule the runners, demo and visualizer use).
default_conv_mode() {
    "$PYTHON" -m llava_star.prompting --conv-mode-for "$1"
}

# limit_of [flags...]: N of the last --limit N / --limit=N, or nothing.
limit_of() {
    local limit=""
    while (($#)); do
        case "$1" in
            --limit) limit="${2:-}"; shift ;;
            --limit=*) limit="${1#--limit=}" ;;
        esac
        shift
    done
    printf '%s' "$limit"
}

# eval_init "$@": MODEL_PATH, RUNNER_FLAGS (array), CKPT, LIMIT; BENCH_DIR checks are per script.
eval_init() {
    if (($# < 1)) || [[ "$1" == -h || "$1" == --help ]]; then
        usage
        exit 2
    fi
    MODEL_PATH="$1"
    shift
    if [[ "$MODEL_PATH" == -* ]]; then
        usage
        die "the first argument must be MODEL_PATH, got '$MODEL_PATH'"
    fi
    RUNNER_FLAGS=("$@")
    CKPT="${CKPT:-$(ckpt_name "$MODEL_PATH" "$@")}"
    LIMIT="$(limit_of "$@")"
    LIMIT_MARK="${LIMIT:+-limit$LIMIT}"
    [[ -z "$LIMIT" || "$CKPT" == *"$LIMIT_MARK" ]] || CKPT+="$LIMIT_MARK"
    CONV_MODE="${CONV_MODE:-$(default_conv_mode "$MODEL_PATH")}"
    read -ra SCORE_EXTRA <<< "${SCORE_ARGS:-}"
    # a smoke run covers part of the benchmark: score what it answered (marked partial)
    [[ -z "$LIMIT" ]] || SCORE_EXTRA+=(--allow-missing)
    echo "$(basename "$0"): model $MODEL_PATH (conv mode $CONV_MODE), results as '$CKPT', data in $EVAL_DIR" >&2
}

need_dir() {  # need_dir PATH WHAT
    [[ -d "$1" ]] || die "$2 not found: expected the directory $1 (set EVAL_DIR or see eval/README.md)"
}

need_file() {  # need_file PATH WHAT
    [[ -f "$1" ]] || die "$2 not found: expected the file $1 (set EVAL_DIR or see eval/README.md)"
}

# run_chunks MODULE CHUNK_DIR MERGED_FILE [runner flags...]
# One chunk per GPU of CUDA_VISIBLE_DEVICES (in parallel), each resumable in
# CHUNK_DIR/<chunks>_<idx>[-limit<N>].jsonl (the runner's own name for a --limit run),
# then merged in order into MERGED_FILE.
run_chunks() {
    local module="$1" chunk_dir="$2" merged="$3"
    shift 3
    local gpus=()
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        IFS=',' read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"
    fi
    local chunks=$(( ${#gpus[@]} > 0 ? ${#gpus[@]} : 1 ))
    mkdir -p "$chunk_dir" "$(dirname "$merged")"
    local pids=() idx
    trap 'kill ${pids[@]+"${pids[@]}"} 2>/dev/null || true' INT TERM
    for ((idx = 0; idx < chunks; idx++)); do
        # greedy decoding and the model's template, as in LLaVA's scripts; the script's own
        # flags come next and the user's (RUNNER_FLAGS) last, so later flags win
        local cmd=("$PYTHON" -m "$module" --model-path "$MODEL_PATH" --temperature 0 --conv-mode "$CONV_MODE" "$@"
                   --answers-file "$chunk_dir/${chunks}_${idx}${LIMIT_MARK}.jsonl"
                   --num-chunks "$chunks" --chunk-idx "$idx"
                   ${RUNNER_FLAGS[@]+"${RUNNER_FLAGS[@]}"})
        if ((${#gpus[@]} > 0)); then
            CUDA_VISIBLE_DEVICES="${gpus[$idx]}" "${cmd[@]}" &
            pids+=($!)
        else
            "${cmd[@]}"
        fi
    done
    local failed=0 pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        wait "$pid" || failed=1
    done
    trap - INT TERM
    ((failed == 0)) || die "a chunk failed (answers so far are kept in $chunk_dir; re-run to resume)"

    local tmp="$merged.tmp"
    : > "$tmp"
    for ((idx = 0; idx < chunks; idx++)); do
        cat "$chunk_dir/${chunks}_${idx}${LIMIT_MARK}.jsonl" >> "$tmp"
        if [[ -s "$chunk_dir/${chunks}_${idx}${LIMIT_MARK}.skipped.jsonl" ]]; then
            echo "$(basename "$0"): warning: questions skipped: $chunk_dir/${chunks}_${idx}${LIMIT_MARK}.skipped.jsonl" >&2
        fi
    done
    mv "$tmp" "$merged"
    echo "$(basename "$0"): $(wc -l < "$merged") answers in $merged" >&2
}

# score BENCH RESULT_PREFIX [scorer flags...]: the scorer's report in RESULT_PREFIX.txt and
# its headline JSON (the report's last line) in RESULT_PREFIX.json.
score() {
    local bench="$1" prefix="$2"
    shift 2
    mkdir -p "$(dirname "$prefix")"
    # Written aside and moved into place only on success: a failed re-score must not leave an
    # emptied report next to the previous run's headline JSON (numbers for other answers).
    if ! "$PYTHON" -m llava_star.eval.score "$bench" "$@" ${SCORE_EXTRA[@]+"${SCORE_EXTRA[@]}"} | tee "$prefix.txt.tmp"; then
        rm -f "$prefix.txt.tmp" "$prefix.txt" "$prefix.json"
        die "scoring failed (see the error above); no scores written to $prefix.{txt,json}"
    fi
    tail -n 1 "$prefix.txt.tmp" > "$prefix.json.tmp"
    mv "$prefix.txt.tmp" "$prefix.txt"
    mv "$prefix.json.tmp" "$prefix.json"
    echo "$(basename "$0"): scores in $prefix.txt and $prefix.json" >&2
}
