#!/usr/bin/env bash
# MME, as LLaVA's scripts/v1_5/eval/mme.sh: answer llava_mme.jsonl, score against the official
# MME_Benchmark_release_version ground truth (perception / cognition).
#   bash scripts/eval/mme.sh MODEL_PATH [--method star --budget 58 ...]
# Data: $EVAL_DIR/MME/{llava_mme.jsonl, MME_Benchmark_release_version/} (eval/README.md).
# Out:  $EVAL_DIR/MME/answers/$CKPT.jsonl, $CKPT_scores.{txt,json} beside it.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_init "$@"

DIR="$EVAL_DIR/MME"
need_file "$DIR/llava_mme.jsonl" "MME question file"
need_dir "$DIR/MME_Benchmark_release_version" "MME images and ground truth"

# LLaVA's MME file repeats each image's question_id for its two questions.
run_chunks llava_star.eval.model_vqa_loader "$DIR/answers/$CKPT" "$DIR/answers/$CKPT.jsonl" \
    --question-file "$DIR/llava_mme.jsonl" \
    --image-folder "$DIR/MME_Benchmark_release_version" \
    --allow-duplicate-ids

score mme "$DIR/answers/${CKPT}_scores" \
    --answers-file "$DIR/answers/$CKPT.jsonl" \
    --gt-dir "$DIR/MME_Benchmark_release_version"
