#!/usr/bin/env bash
# TextVQA val, as LLaVA's scripts/v1_5/eval/textvqa.sh: answer llava_textvqa_val_v051_ocr.jsonl
# (questions with reference OCR tokens), VQA accuracy against TextVQA_0.5.1_val.json.
#   bash scripts/eval/textvqa.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/textvqa/{llava_textvqa_val_v051_ocr.jsonl, train_images/, TextVQA_0.5.1_val.json}.
# Out:  $EVAL_DIR/textvqa/answers/$CKPT.jsonl, $CKPT_scores.{txt,json} beside it.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

DIR="$EVAL_DIR/textvqa"
need_file "$DIR/llava_textvqa_val_v051_ocr.jsonl" "TextVQA question file"
need_dir "$DIR/train_images" "TextVQA images"
need_file "$DIR/TextVQA_0.5.1_val.json" "TextVQA annotations"

# LLaVA's TextVQA file uses the image id as question_id: an image's questions share it.
run_chunks llava_star.eval.model_vqa_loader "$DIR/answers/$CKPT" "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava_textvqa_val_v051_ocr.jsonl" \
    --image-folder "$DIR/train_images" \
    --allow-duplicate-ids

score textvqa "$DIR/answers/${CKPT}_scores" \
    --answers-file "$DIR/answers/$CKPT.jsonl" \
    --annotation-file "$DIR/TextVQA_0.5.1_val.json"
