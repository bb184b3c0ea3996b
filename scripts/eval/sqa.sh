#!/usr/bin/env bash
# ScienceQA test, as LLaVA's scripts/v1_5/eval/sqa.sh: answer llava_test_CQM-A.json with the
# single-letter prompt, score accuracy and IMG-accuracy (the paper's number).
#   bash scripts/eval/sqa.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/scienceqa/{llava_test_CQM-A.json, images/test/, problems.json, pid_splits.json}.
# Out:  $EVAL_DIR/scienceqa/answers/{$CKPT.jsonl, ${CKPT}_output.jsonl, ${CKPT}_result.json,
#       ${CKPT}_scores.txt, ${CKPT}_scores.json}
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

DIR="$EVAL_DIR/scienceqa"
need_file "$DIR/llava_test_CQM-A.json" "ScienceQA question file"
need_dir "$DIR/images/test" "ScienceQA test images"
need_file "$DIR/problems.json" "ScienceQA problems.json"
need_file "$DIR/pid_splits.json" "ScienceQA pid_splits.json"

run_chunks llava_star.eval.model_vqa_science "$DIR/answers/$CKPT" "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava_test_CQM-A.json" \
    --image-folder "$DIR/images/test" \
    --single-pred-prompt

score sqa "$DIR/answers/${CKPT}_scores" \
    --base-dir "$DIR" \
    --result-file "$DIR/answers/$CKPT.jsonl" \
    --output-file "$DIR/answers/${CKPT}_output.jsonl" \
    --output-result "$DIR/answers/${CKPT}_result.json" \
    --split test
