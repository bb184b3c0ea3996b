#!/usr/bin/env bash
# POPE, as LLaVA's scripts/v1_5/eval/pope.sh: answer llava_pope_test.jsonl on COCO val2014,
# score with the POPE annotations (coco/, POPE repo commit e3e3926).
#   bash scripts/eval/pope.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/pope/{llava_pope_test.jsonl, val2014/, coco/coco_pope_*.json} (eval/README.md).
# Out:  $EVAL_DIR/pope/answers/$CKPT.jsonl, $CKPT_scores.{txt,json} beside it.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

DIR="$EVAL_DIR/pope"
need_file "$DIR/llava_pope_test.jsonl" "POPE question file"
need_dir "$DIR/val2014" "COCO val2014 images"
need_dir "$DIR/coco" "POPE annotations"

run_chunks llava_star.eval.model_vqa_loader "$DIR/answers/$CKPT" "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava_pope_test.jsonl" \
    --image-folder "$DIR/val2014"

score pope "$DIR/answers/${CKPT}_scores" \
    --answers-file "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava_pope_test.jsonl" \
    --annotation-dir "$DIR/coco"
