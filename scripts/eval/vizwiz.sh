#!/usr/bin/env bash
# VizWiz-VQA test, as LLaVA's scripts/v1_5/eval/vizwiz.sh: answer llava_test.jsonl, write the
# EvalAI upload (submit it to the evaluation server).
#   bash scripts/eval/vizwiz.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/vizwiz/{llava_test.jsonl, test/}.
# Out:  $EVAL_DIR/vizwiz/answers/$CKPT.jsonl, ${CKPT}_scores.{txt,json};
#       upload: $EVAL_DIR/vizwiz/answers_upload/$CKPT.json
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

DIR="$EVAL_DIR/vizwiz"
need_file "$DIR/llava_test.jsonl" "VizWiz question file"
need_dir "$DIR/test" "VizWiz test images"

run_chunks llava_star.eval.model_vqa_loader "$DIR/answers/$CKPT" "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava_test.jsonl" \
    --image-folder "$DIR/test"

score vizwiz "$DIR/answers/${CKPT}_scores" \
    --answers-file "$DIR/answers/$CKPT.jsonl" \
    --test-split "$DIR/llava_test.jsonl" \
    --dst "$DIR/answers_upload/$CKPT.json"
