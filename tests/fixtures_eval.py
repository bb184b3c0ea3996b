"""Tiny benchmark workspaces in LLaVA's `playground/data/eval` layout, built under tmp_path from
real scikit-image photos. Each builder writes `<root>/<bench dir>/...` the way the real data is
laid out (file names, question-file formats, ground truth that lines up) and returns a dict
with the paths and the questions, so tests can run the eval scripts and scorers end to end.

    build_all(root, photos) -> {bench: info}
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image

SHORT = "\nAnswer the question using a single word or phrase."
SQA_SUFFIX = "Answer with the option's letter from the given choices directly."

# MME's 14 categories; these five keep images in <cat>/images/ and GT in <cat>/questions_answers_YN/.
MME_CATEGORIES = ["existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR", "commonsense_reasoning", "numerical_calculation", "text_translation",
                  "code_reasoning"]
MME_SUBDIR = {"artwork", "celebrity", "landmark", "posters", "scene"}


def save_photo(img: Image.Image, path: Path, size: int = 160) -> Path:
    """A downscaled copy of a real photo (keeps its aspect ratio and content)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = img.convert("RGB").copy()
    im.thumbnail((size, size))
    im.save(path)
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _pick(photos: Dict[str, Image.Image], i: int) -> Image.Image:
    names = sorted(photos)
    return photos[names[i % len(names)]]


def build_mme(root: Path, photos) -> dict:
    """MME/MME_Benchmark_release_version with every category (GT for one image each, two
    questions), and llava_mme.jsonl asking 4 of them: existence (image beside its txt) and
    artwork (images/ + questions_answers_YN/). Ids repeat per image, as in LLaVA's file."""
    base = root / "MME"
    gt_root = base / "MME_Benchmark_release_version"
    questions = []
    for i, cat in enumerate(MME_CATEGORIES):
        image = "0001.jpg" if cat != "code_reasoning" else "0001.png"
        img_dir = gt_root / cat / "images" if cat in MME_SUBDIR else gt_root / cat
        txt_dir = gt_root / cat / "questions_answers_YN" if cat in MME_SUBDIR else gt_root / cat
        save_photo(_pick(photos, i), img_dir / image, size=96)
        pairs = [(f"Is there a cat in this {cat} image? Please answer yes or no.", "Yes"),
                 (f"Is there a dog in this {cat} image?  Please answer yes or no.", "No")]
        txt_dir.mkdir(parents=True, exist_ok=True)
        (txt_dir / "0001.txt").write_text("".join(f"{q}\t{a}\n" for q, a in pairs), encoding="utf-8")
        if cat in ("existence", "artwork"):
            rel = f"{cat}/images/{image}" if cat in MME_SUBDIR else f"{cat}/{image}"
            for q, _ in pairs:
                text = q.replace("Please answer yes or no.", "").strip() + SHORT
                questions.append({"question_id": rel, "image": rel, "text": text, "category": cat})
    write_jsonl(base / "llava_mme.jsonl", questions)
    return {"dir": base, "questions": questions, "gt_dir": gt_root}


def build_pope(root: Path, photos) -> dict:
    """pope/llava_pope_test.jsonl (ids: split k -> k * 10**7 + annotation id, splits in LLaVA's
    order adversarial, random, popular), val2014/ images, coco/coco_pope_<split>.json."""
    base = root / "pope"
    rows = {"adversarial": [("Is there a person in the image?", "yes")],
            "random": [("Is there a cat in the image?", "no"), ("Is there a person in the image?", "yes")],
            "popular": [("Is there a dining table in the image?", "no")]}
    questions = []
    n = 0
    for k, (split, qs) in enumerate(rows.items()):
        anns = []
        for i, (q, label) in enumerate(qs, start=1):
            image = f"COCO_val2014_{310196 + n:012d}.jpg"
            save_photo(_pick(photos, n), base / "val2014" / image)
            anns.append({"question_id": i, "image": image, "text": q, "label": label})
            questions.append({"question_id": k * 10 ** 7 + i, "image": image, "text": q + SHORT, "category": split})
            n += 1
        write_jsonl(base / "coco" / f"coco_pope_{split}.json", anns)
    write_jsonl(base / "llava_pope_test.jsonl", questions)
    return {"dir": base, "questions": questions}


def build_gqa(root: Path, photos) -> dict:
    """gqa/llava_gqa_testdev_balanced.jsonl, gqa/data/images/, gqa/data/testdev_balanced_questions.json."""
    base = root / "gqa"
    qs = [("20968013", "n288870", "Is the sky dark?", "no", "verify"),
          ("201307251", "n161313", "What is the woman holding?", "cup", "query"),
          ("201640614", "n235859", "Which color is the cat?", "gray", "query"),
          ("202225914", "n288870", "Are there both cars and trees?", "yes", "logical")]
    questions, gt = [], {}
    for i, (qid, image_id, q, a, t) in enumerate(qs):
        save_photo(_pick(photos, i), base / "data" / "images" / f"{image_id}.jpg")
        questions.append({"question_id": qid, "image": f"{image_id}.jpg", "text": q + SHORT, "category": "default"})
        gt[qid] = {"question": q, "answer": a, "imageId": image_id, "isBalanced": True,
                   "types": {"structural": t, "semantic": "attr", "detailed": "x"}}
    write_jsonl(base / "llava_gqa_testdev_balanced.jsonl", questions)
    write_json(base / "data" / "testdev_balanced_questions.json", gt)
    return {"dir": base, "questions": questions}


def build_vqav2(root: Path, photos) -> dict:
    """vqav2/llava_vqav2_mscoco_test-dev2015.jsonl (asked), llava_vqav2_mscoco_test2015.jsonl
    (the full split the upload covers: test-dev plus one more), test2015/ images."""
    base = root / "vqav2"
    dev = []
    for i, (qid, q) in enumerate([(262144000, "Is the ball flying towards the batter?"),
                                  (262144001, "What sport is being played?"),
                                  (393225000, "What color is the cat?")]):
        image = f"COCO_test2015_{qid // 1000:012d}.jpg"
        save_photo(_pick(photos, i), base / "test2015" / image)
        dev.append({"question_id": qid, "image": image, "text": q + SHORT, "category": "default"})
    full = dev + [{"question_id": 581929002, "image": "COCO_test2015_000000581929.jpg",
                   "text": "How many people?" + SHORT, "category": "default"}]
    write_jsonl(base / "llava_vqav2_mscoco_test-dev2015.jsonl", dev)
    write_jsonl(base / "llava_vqav2_mscoco_test2015.jsonl", full)
    return {"dir": base, "questions": dev, "split": full}


def build_textvqa(root: Path, photos) -> dict:
    """textvqa/llava_textvqa_val_v051_ocr.jsonl (question_id = image id, as LLaVA's file; two
    questions share an image), train_images/, TextVQA_0.5.1_val.json."""
    base = root / "textvqa"
    rows = [(34602, "003a8ae2ef43b901", "what is the brand of this camera?", ["dakota", "digital"], "dakota"),
            (34603, "003a8ae2ef43b901", "what does the small white text spell?", ["copenhagen"], "copenhagen"),
            (34604, "00685bc495504d61", "what kind of beer is this?", ["ale", "stone"], "ale")]
    questions, data = [], []
    for i, (qid, image_id, q, ocr, ans) in enumerate(rows):
        image = f"{image_id}.jpg"
        if not (base / "train_images" / image).exists():
            save_photo(_pick(photos, i), base / "train_images" / image)
        questions.append({"question_id": image_id, "image": image,
                          "text": f"{q}\nReference OCR token: {', '.join(ocr)}" + SHORT, "category": "default"})
        data.append({"question_id": qid, "image_id": image_id, "question": q, "answers": [ans] * 10,
                     "image_classes": ["Camera"], "set_name": "val"})
    write_jsonl(base / "llava_textvqa_val_v051_ocr.jsonl", questions)
    write_json(base / "TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa",
                                                 "dataset_version": "0.5.1", "data": data})
    return {"dir": base, "questions": questions}


def build_sqa(root: Path, photos) -> dict:
    """scienceqa/llava_test_CQM-A.json (llava's conversation format; one text-only problem),
    images/test/<pid>/image.png, problems.json, pid_splits.json."""
    base = root / "scienceqa"
    probs = [("4", True, "Which animal's feet are also adapted for grabbing prey?", ["cat", "fish"], 0),
             ("5", False, "Which word would you find on a dictionary page with the guide words hat - hop?",
              ["hen", "home"], 1),
             ("7", True, "What is the color of the object?", ["gray", "red", "blue"], 0)]
    questions, problems = [], {}
    for i, (pid, has_image, q, choices, answer) in enumerate(probs):
        opts = " ".join(f"({chr(65 + j)}) {c}" for j, c in enumerate(choices))
        value = f"Context: N/A\nQuestion: {q}\nOptions: {opts}"
        entry = {"id": pid, "conversations": [{"from": "human", "value": value},
                                              {"from": "gpt", "value": chr(65 + answer)}]}
        if has_image:
            save_photo(_pick(photos, i), base / "images" / "test" / pid / "image.png")
            entry["image"] = f"{pid}/image.png"
            entry["conversations"][0]["value"] = "<image>\n" + value
        questions.append(entry)
        problems[pid] = {"question": q, "choices": choices, "answer": answer, "hint": "",
                         "image": "image.png" if has_image else None, "task": "closed choice",
                         "grade": "grade2", "subject": "natural science", "split": "test"}
    write_json(base / "llava_test_CQM-A.json", questions)
    write_json(base / "problems.json", problems)
    write_json(base / "pid_splits.json", {"train": [], "val": [], "test": [p[0] for p in probs]})
    return {"dir": base, "questions": questions}


def build_vizwiz(root: Path, photos) -> dict:
    """vizwiz/llava_test.jsonl and test/ images."""
    base = root / "vizwiz"
    suffix = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT
    questions = []
    for i, q in enumerate(["What is this?", "What color is this shirt?", "Can you read the label?"]):
        image = f"VizWiz_test_{i:08d}.jpg"
        save_photo(_pick(photos, i), base / "test" / image)
        questions.append({"question_id": i, "image": image, "text": q + suffix, "category": "default"})
    write_jsonl(base / "llava_test.jsonl", questions)
    return {"dir": base, "questions": questions}


def build_mmvet(root: Path, photos) -> dict:
    """mm-vet/llava-mm-vet.jsonl and images/v1_<n>.<ext>."""
    base = root / "mm-vet"
    questions = []
    for i, (q, ext) in enumerate([("What is the person wearing?", "jpg"), ("Describe the animal.", "png")]):
        image = f"v1_{i}.{ext}"
        save_photo(_pick(photos, i), base / "images" / image)
        questions.append({"question_id": i, "image": image, "text": q, "category": "default"})
    write_jsonl(base / "llava-mm-vet.jsonl", questions)
    return {"dir": base, "questions": questions}


BUILDERS = {"mme": build_mme, "pope": build_pope, "gqa": build_gqa, "vqav2": build_vqav2,
            "textvqa": build_textvqa, "sqa": build_sqa, "vizwiz": build_vizwiz, "mmvet": build_mmvet}


def build_all(root: Path, photos) -> Dict[str, dict]:
    root = Path(root)
    return {name: build(root, photos) for name, build in BUILDERS.items()}


def simple_questions(folder: Path, photos, n: int = 4) -> List[dict]:
    """n short-answer questions over real photos (square and non-square), images under `folder`."""
    texts = ["What is shown in the image?", "Is there a cat in the image?", "What color is the sky?",
             "How many people are there?", "Is it daytime?", "What is on the table?"]
    names = sorted(photos)
    out = []
    for i in range(n):
        name = names[i % len(names)]
        path = folder / f"{name}.jpg"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            photos[name].convert("RGB").save(path)
        out.append({"question_id": i, "image": path.name, "text": texts[i % len(texts)] + SHORT,
                    "category": "default"})
    return out


def read_jsonl(path) -> List[dict]:
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def env_without_cuda(extra=None) -> dict:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(extra or {})
    return env


# Fixtures shared by the runner test modules (import them by name into a module to use them).

@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def qdir(tmp_path_factory, images):
    """Four short-answer questions over real photos (square and non-square): questions.jsonl
    and images/."""
    root = tmp_path_factory.mktemp("runner")
    write_jsonl(root / "questions.jsonl", simple_questions(root / "images", images, 4))
    return root
