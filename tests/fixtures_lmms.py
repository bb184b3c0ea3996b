"""Local lmms-eval tasks over real photos, built offline: a generation task and a
multiple-choice task whose datasets are JSON lines read by `datasets`' json builder, and the
same questions as a llava question file for `llava_star.eval.model_vqa_loader`.

    build_tasks(root, photos) -> {"include": dir for --include_path, "gen": task name, "mc": ..., ...}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from fixtures_eval import save_photo, write_jsonl

GEN_TASK = "star_tiny_vqa"
MC_TASK = "star_tiny_mc"
NEW_TOKENS = 4

# Questions of different lengths, so batches pad.
QUESTIONS = ["What is in the picture?", "Is there a cat?",
             "Describe the colours of the largest object in this photograph in one word.", "How many?"]
CHOICES = [["yes", "no"], ["red", "green", "blue", "a very dark grey"], ["cat", "rocket", "cup"], ["A", "B"]]

UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]
'''

GEN_YAML = f'''task: {GEN_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {{data}}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {NEW_TOKENS}
  temperature: 0
  top_p: null
  num_beams: 1
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
'''

MC_YAML = f'''task: {MC_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {{data}}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
'''


def build_tasks(root: Path, photos: Dict) -> dict:
    """Images under root/images, tasks under root/tasks (the --include_path), the runner's
    question file root/questions.jsonl (same images and questions as the generation task)."""
    root = Path(root)
    tasks = root / "tasks"
    tasks.mkdir(parents=True, exist_ok=True)
    gen, mc, runner = [], [], []
    for i, name in enumerate(sorted(photos)):
        image = save_photo(photos[name], root / "images" / f"{name}.png")
        for j in range(2):  # two questions per photo: 8 in all
            q = QUESTIONS[(i + j) % len(QUESTIONS)]
            qid = f"{name}-{j}"
            gen.append({"id": qid, "image": str(image), "question": q, "answer": "yes"})
            runner.append({"question_id": qid, "image": image.name, "text": q})
        mc.append({"id": name, "image": str(image), "question": QUESTIONS[i] + " Answer with one word.",
                   "choices": CHOICES[i], "label": 0})
    write_jsonl(root / "data" / "gen.jsonl", gen)
    write_jsonl(root / "data" / "mc.jsonl", mc)
    write_jsonl(root / "questions.jsonl", runner)
    (tasks / "utils.py").write_text(UTILS)
    (tasks / f"{GEN_TASK}.yaml").write_text(GEN_YAML.replace("{data}", json.dumps(str(root / "data" / "gen.jsonl"))))
    (tasks / f"{MC_TASK}.yaml").write_text(MC_YAML.replace("{data}", json.dumps(str(root / "data" / "mc.jsonl"))))
    return {"include": tasks, "gen": GEN_TASK, "mc": MC_TASK, "images": root / "images",
            "questions": root / "questions.jsonl", "gen_docs": gen, "mc_docs": mc}
