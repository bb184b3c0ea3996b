#!/usr/bin/env bash
# GQA testdev-balanced, as LLaVA's scripts/v1_5/eval/gqa.sh: one chunk per GPU, merge,
# convert to GQA predictions, exact-match accuracy.
#   CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/eval/gqa.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/gqa/{llava_gqa_testdev_balanced.jsonl, data/images/, data/testdev_balanced_questions.json}.
# Out:  $EVAL_DIR/gqa/answers/llava_gqa_testdev_balanced/$CKPT/{<chunks>_<idx>.jsonl, merge.jsonl,
#       testdev_balanced_predictions.json, scores.txt, scores.json}
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

SPLIT="llava_gqa_testdev_balanced"
DIR="$EVAL_DIR/gqa"
GQADIR="$DIR/data"
need_file "$DIR/$SPLIT.jsonl" "GQA question file"
need_dir "$GQADIR/images" "GQA images"
need_file "$GQADIR/testdev_balanced_questions.json" "GQA testdev-balanced questions (ground truth)"

OUT="$DIR/answers/$SPLIT/$CKPT"
run_chunks llava_star.eval.model_vqa_loader "$OUT" "$OUT/merge.jsonl" \
    --question-file "$DIR/$SPLIT.jsonl" \
    --image-folder "$GQADIR/images"

score gqa "$OUT/scores" \
    --answers-file "$OUT/merge.jsonl" \
    --questions "$GQADIR/testdev_balanced_questions.json" \
    --predictions-out "$OUT/testdev_balanced_predictions.json"
