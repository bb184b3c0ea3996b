#!/usr/bin/env bash
# MM-Vet, as LLaVA's scripts/v1_5/eval/mmvet.sh: answer llava-mm-vet.jsonl with model_vqa
# (open-ended, up to 1024 tokens), write the results file for the MM-Vet GPT-4 grader.
#   bash scripts/eval/mmvet.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/mm-vet/{llava-mm-vet.jsonl, images/}.
# Out:  $EVAL_DIR/mm-vet/answers/$CKPT.jsonl, ${CKPT}_scores.{txt,json};
#       grader input: $EVAL_DIR/mm-vet/results/$CKPT.json
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

DIR="$EVAL_DIR/mm-vet"
need_file "$DIR/llava-mm-vet.jsonl" "MM-Vet question file"
need_dir "$DIR/images" "MM-Vet images"

run_chunks llava_star.eval.model_vqa "$DIR/answers/$CKPT" "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava-mm-vet.jsonl" \
    --image-folder "$DIR/images"

score mmvet "$DIR/answers/${CKPT}_scores" \
    --answers-file "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava-mm-vet.jsonl" \
    --dst "$DIR/results/$CKPT.json"
