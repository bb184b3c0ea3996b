"""The eval runners on the hf host (`--host hf`, auto for a llava-hf checkpoint) in .venv-hf
(no llava-torch): llava's answers-file format, answers equal to transformers' own generate on
the same photos (stock for --method none, llava_star.hf.apply for star), metadata equal to the
model's record, batch 2 = batch 1, one-line refusals. One model run is a subprocess, as a user
runs it; the others run in this process (each fresh interpreter costs seconds of imports)."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO, greedy, inputs, load
from fixtures_eval import SQA_SUFFIX, read_jsonl, simple_questions, write_json, write_jsonl
from help_probe import run_help
from llava_star import MethodConfig
from llava_star.eval import model_vqa_loader, model_vqa_science

NEW_TOKENS = 3
STAR = ["--method", "star", "--budget", "58"]


def runner(module, *argv):
    return subprocess.run([sys.executable, "-m", f"llava_star.eval.{module}", *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def qdir(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("hf_eval")
    write_jsonl(root / "questions.jsonl", simple_questions(root / "images", images, 2))
    return root


def loader_argv(tiny_hf, qdir, answers, *extra):
    return [str(a) for a in ["--model-path", tiny_hf, "--question-file", qdir / "questions.jsonl", "--image-folder",
                             qdir / "images", "--answers-file", answers, "--temperature", "0",
                             "--max_new_tokens", NEW_TOKENS, *extra]]


def loader(tiny_hf, qdir, answers, *extra, fresh=False):
    """Answers of one model_vqa_loader run (the scripts' flags: greedy, --conv-mode vicuna_v1),
    in a fresh interpreter with `fresh`."""
    argv = loader_argv(tiny_hf, qdir, answers, "--conv-mode", "vicuna_v1", *extra)
    if fresh:
        out = runner("model_vqa_loader", *argv)
        assert out.returncode == 0, out.stderr
    else:
        assert model_vqa_loader.main(argv) == 0
    return read_jsonl(answers)


def direct(tiny_hf, qdir, star):
    """Per question, transformers' own reading of it (the prompt conftest builds by hand,
    "USER: <image>\n{q} ASSISTANT:", one question at a time): with `star`, (greedy answer,
    record summary) of the applied model; without, the processor's image placeholder count."""
    proc, model = load(tiny_hf, star=star)
    out = []
    for q in read_jsonl(qdir / "questions.jsonl"):
        batch = inputs(proc, [Image.open(qdir / "images" / q["image"]).convert("RGB")], [q["text"]])
        if star is None:
            out.append(int((batch["input_ids"] == model.config.image_token_id).sum()))
            continue
        text = proc.batch_decode(greedy(model, batch, NEW_TOKENS), skip_special_tokens=True)[0].strip()
        out.append((text, model.star_record[0].summary()))
    return out


@pytest.mark.parametrize("method", ["star", "none"])
def test_loader_answers_and_metadata_match_transformers(tiny_hf, qdir, tmp_path, method):
    flags = STAR if method == "star" else []
    one = loader(tiny_hf, qdir, tmp_path / "b1.jsonl", *flags, fresh=method == "star")
    two = loader(tiny_hf, qdir, tmp_path / "b2.jsonl", *flags, "--batch-size", "2")
    questions = read_jsonl(qdir / "questions.jsonl")
    assert len(one) == len(questions) == 2
    assert [a["question_id"] for a in one] == [q["question_id"] for q in questions]
    assert [a["prompt"] for a in one] == [q["text"] for q in questions]
    assert {a["model_id"] for a in one} == {"llava-hf-tiny"}
    assert [(a["text"], a["metadata"]) for a in two] == [(a["text"], a["metadata"]) for a in one]
    if method == "star":
        want = direct(tiny_hf, qdir, MethodConfig.from_name("star", budget=58))
        assert [a["text"] for a in one] == [text for text, _ in want]
        for a, (_, record) in zip(one, want):
            assert a["metadata"] == {"method": "star", "budget": 58, **record}
            assert record["final_kept"] == 58 and record["visual_tokens"] == 576
    else:  # unpruned: every count is the processor's placeholders (576 for LLaVA-1.5)
        assert direct(tiny_hf, qdir, None) == [576] * len(questions)
        assert [a["metadata"] for a in one] == [{"method": "none", "visual_tokens": 576, "stage1_kept": 576,
                                                 "final_kept": 576, "t_eq": 576.0}] * len(questions)
    settings = json.loads((tmp_path / "b1.settings.json").read_text())
    assert settings["host"] == "hf" and settings["conv_mode"] is None


def test_loader_on_llava_next(tiny_hf_next, qdir, tmp_path):
    """A LlavaNextForConditionalGeneration checkpoint through the same runner (auto host):
    batch 2 = batch 1, answers and metadata as the model's own generate and record."""
    one = loader(tiny_hf_next, qdir, tmp_path / "b1.jsonl", *STAR)
    two = loader(tiny_hf_next, qdir, tmp_path / "b2.jsonl", *STAR, "--batch-size", "2")
    assert [(a["text"], a["metadata"]) for a in two] == [(a["text"], a["metadata"]) for a in one]
    want = direct(tiny_hf_next, qdir, MethodConfig.from_name("star", budget=58))
    assert [(a["text"], a["metadata"]) for a in one] == [(t, {"method": "star", "budget": 58, **r}) for t, r in want]
    assert all(r["final_kept"] == 58 and r["visual_tokens"] > 576 for _, r in want)  # anyres: crops
    fixed = loader(tiny_hf_next, qdir, tmp_path / "fixed.jsonl", *STAR, "--fixed-grid", "672")
    import llava_star.hf

    proc, model = llava_star.hf.load_pretrained(tiny_hf_next, star=MethodConfig.from_name("star", budget=58),
                                                device="cpu", fixed_grid=672)
    for a, q in zip(fixed, read_jsonl(qdir / "questions.jsonl")):  # one 2x2 grid + base for every image
        batch = inputs(proc, [Image.open(qdir / "images" / q["image"]).convert("RGB")], [q["text"]])
        assert batch["pixel_values"].shape[1] == 5
        greedy(model, batch, 1)
        assert a["metadata"] == {"method": "star", "budget": 58, **model.star_record[0].summary()}


def test_science_image_and_text_only_questions(tiny_hf, images, tmp_path):
    name = sorted(images)[0]
    images[name].convert("RGB").save(tmp_path / "a.png")
    write_json(tmp_path / "q.json", [
        {"id": "img", "image": "a.png", "conversations": [{"value": "<image>\nWhich animal?\nA. cat\nB. dog"}]},
        {"id": "txt", "conversations": [{"value": "Which is a planet?\nA. Mars\nB. Moon"}]}])
    argv = ["--model-path", tiny_hf, "--question-file", tmp_path / "q.json", "--image-folder", tmp_path,
            "--answers-file", tmp_path / "a.jsonl", "--single-pred-prompt", "--temperature", "0",
            "--max_new_tokens", NEW_TOKENS, "--batch-size", "2", *STAR]
    assert model_vqa_science.main([str(a) for a in argv]) == 0
    img, txt = read_jsonl(tmp_path / "a.jsonl")
    assert img["prompt"] == "<image>\nWhich animal?\nA. cat\nB. dog\n" + SQA_SUFFIX
    assert txt["prompt"] == "Which is a planet?\nA. Mars\nB. Moon\n" + SQA_SUFFIX
    assert img["metadata"]["final_kept"] == 58 and img["metadata"]["visual_tokens"] == 576
    assert txt["metadata"] == {"method": "star", "budget": 58, "visual_tokens": 0, "stage1_kept": 0,
                               "final_kept": 0, "t_eq": 0.0}


@pytest.mark.parametrize("flags, message", [
    (["--host", "llava"], "--host llava: --model-path "),
    (["--conv-mode", "llava_v0"], "--conv-mode llava_v0: on the hf host the checkpoint's chat template"),
    (["--fixed-grid", "672"], "--fixed-grid needs a LLaVA-NeXT (anyres) checkpoint"),
])
def test_refusals_are_one_line(tiny_hf, qdir, tmp_path, flags, message):
    out = runner("model_vqa_loader", *loader_argv(tiny_hf, qdir, tmp_path / "a.jsonl", *flags))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "a.jsonl").exists()


def test_resume_refuses_answers_of_the_other_host(tiny_hf, qdir, tmp_path, capsys):
    answers = tmp_path / "a.jsonl"
    loader(tiny_hf, qdir, tmp_path / "a-limit1.jsonl", "--limit", "1")
    limited = tmp_path / "a-limit1.settings.json"
    recorded = json.loads(limited.read_text())
    limited.write_text(json.dumps({**recorded, "host": "llava"}))
    rc = model_vqa_loader.main(loader_argv(tiny_hf, qdir, answers, "--limit", "1"))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert 'was made with other settings, so resuming would mix answers: --host: recorded "llava", now "hf"' in err


def test_help_lists_host_and_imports_nothing_heavy():
    out, _ = run_help("llava_star.eval.model_vqa_loader", cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "--host {auto,llava,hf}" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"
