#!/usr/bin/env bash
# VQAv2 test-dev, as LLaVA's scripts/v1_5/eval/vqav2.sh: one chunk per GPU, merge, write the
# EvalAI upload covering the whole test2015 split (submit it to the evaluation server).
#   CUDA_VISIBLE_DEVICES=0,1,2,3 bash scripts/eval/vqav2.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/vqav2/{llava_vqav2_mscoco_test-dev2015.jsonl, llava_vqav2_mscoco_test2015.jsonl, test2015/}.
# Out:  $EVAL_DIR/vqav2/answers/llava_vqav2_mscoco_test-dev2015/$CKPT/{<chunks>_<idx>.jsonl, merge.jsonl,
#       scores.txt, scores.json}; upload: $EVAL_DIR/vqav2/answers_upload/llava_vqav2_mscoco_test-dev2015/$CKPT.json
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

SPLIT="llava_vqav2_mscoco_test-dev2015"
DIR="$EVAL_DIR/vqav2"
need_file "$DIR/$SPLIT.jsonl" "VQAv2 test-dev question file"
need_file "$DIR/llava_vqav2_mscoco_test2015.jsonl" "VQAv2 full test2015 question file"
need_dir "$DIR/test2015" "COCO test2015 images"

OUT="$DIR/answers/$SPLIT/$CKPT"
run_chunks llava_star.eval.model_vqa_loader "$OUT" "$OUT/merge.jsonl" \
    --question-file "$DIR/$SPLIT.jsonl" \
    --image-folder "$DIR/test2015"

score vqav2 "$OUT/scores" \
    --answers-file "$OUT/merge.jsonl" \
    --test-split "$DIR/llava_vqav2_mscoco_test2015.jsonl" \
    --dst "$DIR/answers_upload/$SPLIT/$CKPT.json"
