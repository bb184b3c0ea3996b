"""The eval runners (llava_star.eval.model_vqa_loader / model_vqa_science / model_vqa).

- parity: on the tiny checkpoint, each runner's answers file equals the one llava's own runner
  (run in-process, .cuda()/fp16 neutralised, fp32 on CPU) writes, except answer_id/metadata;
- llava's flags: every flag of llava's runner exists with the same spelling and default
  (read from llava's source);
- never losing work: resume after a crash (truncated last line), out-of-order partial files,
  --no-resume never touching the old file until the end;
- input errors: duplicate ids, empty file, more chunks than questions, missing / unreadable
  images (checked before the model loads), --skip-bad-images.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
from pathlib import Path

import pytest
import torch

from fixtures_eval import SHORT, offline_hub, qdir, read_jsonl, write_json, write_jsonl  # noqa: F401 (fixtures)
from llava_star.eval import generation, model_vqa, model_vqa_loader, model_vqa_science

RUNNERS = {"model_vqa_loader": model_vqa_loader, "model_vqa_science": model_vqa_science,
           "model_vqa": model_vqa}
NEW_TOKENS = 3


def run(module, *argv, capsys=None):
    rc = RUNNERS[module].main([str(a) for a in argv])
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


def base_args(tiny15, qdir, answers, *extra):
    return ["--model-path", tiny15, "--question-file", qdir / "questions.jsonl",
            "--image-folder", qdir / "images", "--answers-file", answers, "--temperature", "0",
            "--max_new_tokens", NEW_TOKENS, "--device", "cpu", "--conv-mode", "vicuna_v1", *extra]


@pytest.fixture(scope="module")
def reference(tiny15, qdir, tmp_path_factory):
    """A complete --method none run: the answers every resume scenario must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "answers.jsonl"
    assert model_vqa_loader.main([str(a) for a in base_args(tiny15, qdir, out)]) == 0
    REFERENCE_SETTINGS["text"] = (out.parent / "answers.settings.json").read_text()
    return read_jsonl(out)


REFERENCE_SETTINGS = {}


def write_partial(path, rows):
    """An answers file as the reference run would have left it part way (its settings record
    beside it, so a resume accepts it)."""
    write_jsonl(path, rows)
    (path.parent / (path.stem + ".settings.json")).write_text(REFERENCE_SETTINGS["text"])
    return path


def strip_ids(rows):
    return [{k: v for k, v in r.items() if k not in ("answer_id", "metadata")} for r in rows]


# ----------------------------------------------------------------------------- llava's flags

def llava_parser(module: str) -> argparse.ArgumentParser:
    """The ArgumentParser llava's runner builds under `if __name__ == "__main__"`, rebuilt from
    its source (the module builds it only when run as a script)."""
    src = Path(importlib.import_module(f"llava.eval.{module}").__file__).read_text()
    parser = argparse.ArgumentParser()
    types = {"str": str, "int": int, "float": float}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {}
            for kw in node.keywords:
                kwargs[kw.arg] = types[kw.value.id] if kw.arg == "type" else ast.literal_eval(kw.value)
            parser.add_argument(*args, **kwargs)
    return parser


@pytest.mark.parametrize("module", sorted(RUNNERS))
def test_every_llava_flag_with_llava_default(module):
    ours = {a.dest: a for a in RUNNERS[module].parser()._actions}
    theirs = [a for a in llava_parser(module)._actions if a.dest != "help"]
    assert theirs, "could not read llava's flags"
    for a in theirs:
        assert a.dest in ours, f"missing llava flag {a.option_strings}"
        o = ours[a.dest]
        assert set(a.option_strings) <= set(o.option_strings)
        assert o.default == a.default, f"{a.option_strings}: default {o.default!r} != llava's {a.default!r}"
        assert o.type == a.type and type(o) is type(a), a.option_strings


@pytest.mark.parametrize("module", sorted(RUNNERS))
def test_help(module, capsys):
    with pytest.raises(SystemExit) as e:
        RUNNERS[module].main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model-path", "--question-file", "--method", "--budget", "--device", "--batch-size",
                 "--attn-implementation", "--no-resume", "--skip-bad-images", "--limit", "--host"):
        assert flag in out


# ----------------------------------------------------------------------------- parity with llava

@pytest.fixture
def llava_in_process(monkeypatch):
    """Run llava.eval.<module>.eval_model(args) on CPU in fp32: its builder call loads fp32 on
    the CPU, `.cuda()` / `.half()` / `.to('cuda', float16)` become no-ops, and generate is capped
    at NEW_TOKENS (model_vqa/model_vqa_science hard-code 1024)."""
    from llava.model.builder import load_pretrained_model as llava_load

    from llava_star.patches import builder_loads_in

    def load(model_path, model_base, model_name, **kw):
        with builder_loads_in(torch.float32):
            tok, model, proc, ctx = llava_load(model_path, model_base, model_name, device="cpu")
        model = model.float().eval()
        generate = model.generate

        def capped(*a, **k):
            k["max_new_tokens"] = NEW_TOKENS
            return generate(*a, **k)

        model.generate = capped
        return tok, model, proc, ctx

    to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        args = tuple(torch.float32 if a is torch.float16 else
                     ("cpu" if isinstance(a, str) and a.startswith("cuda") else a) for a in args)
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        if kwargs.get("dtype") is torch.float16:
            kwargs["dtype"] = torch.float32
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to_cpu)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.Tensor, "half", lambda self, *a, **k: self)

    def run_llava(module, argv):
        mod = importlib.import_module(f"llava.eval.{module}")
        args = llava_parser(module).parse_args([str(a) for a in argv])
        monkeypatch.setattr(mod, "load_pretrained_model", load)
        monkeypatch.setattr(mod, "disable_torch_init", lambda: None)  # it patches torch globally
        monkeypatch.setattr(mod, "args", args, raising=False)       # CustomDataset reads a global
        if hasattr(mod, "create_data_loader"):
            make = mod.create_data_loader
            monkeypatch.setattr(mod, "create_data_loader",
                                lambda *a, **k: make(*a, **{**k, "num_workers": 0}))
        with torch.no_grad():
            mod.eval_model(args)

    return run_llava


def test_loader_parity_with_llava(tiny15, qdir, tmp_path, llava_in_process, capsys):
    common_args = ["--model-path", tiny15, "--question-file", qdir / "questions.jsonl",
                   "--image-folder", qdir / "images", "--temperature", "0", "--max_new_tokens", NEW_TOKENS]
    theirs, ours = tmp_path / "llava" / "a.jsonl", tmp_path / "ours" / "a.jsonl"
    llava_in_process("model_vqa_loader", common_args + ["--answers-file", theirs])
    rc, err = run("model_vqa_loader", *common_args, "--answers-file", ours, "--device", "cpu", capsys=capsys)
    assert rc == 0, err
    a, b = read_jsonl(theirs), read_jsonl(ours)
    assert [list(r) for r in b] == [list(r) for r in a]  # same keys, same order
    assert strip_ids(b) == strip_ids(a)
    assert [r["question_id"] for r in b] == [0, 1, 2, 3]
    assert all(r["metadata"] == {"method": "none", "visual_tokens": 576, "stage1_kept": 576,
                                 "final_kept": 576, "t_eq": 576.0} for r in b)


def test_model_vqa_parity_with_llava(tiny15, qdir, tmp_path, llava_in_process, capsys):
    qs = read_jsonl(qdir / "questions.jsonl")[:2]
    for q in qs:
        q["text"] = q["text"].replace(SHORT, "")  # MM-Vet style open question
    write_jsonl(tmp_path / "q.jsonl", qs)
    common_args = ["--model-path", tiny15, "--question-file", tmp_path / "q.jsonl",
                   "--image-folder", qdir / "images", "--temperature", "0", "--conv-mode", "vicuna_v1"]
    llava_in_process("model_vqa", common_args + ["--answers-file", tmp_path / "llava.jsonl"])
    rc, err = run("model_vqa", *common_args, "--answers-file", tmp_path / "ours.jsonl", "--device", "cpu",
                  "--max_new_tokens", NEW_TOKENS, capsys=capsys)
    assert rc == 0, err
    assert strip_ids(read_jsonl(tmp_path / "ours.jsonl")) == strip_ids(read_jsonl(tmp_path / "llava.jsonl"))


def science_questions(tmp_path, images):
    """llava's ScienceQA format: two problems with an image (one RGBA PNG), one text-only."""
    img_dir = tmp_path / "sqa_images"
    (img_dir / "11").mkdir(parents=True)
    (img_dir / "13").mkdir(parents=True)
    images["chelsea"].save(img_dir / "11" / "image.png")
    images["coffee"].convert("RGBA").save(img_dir / "13" / "image.png")
    qs = [{"id": "11", "image": "11/image.png", "conversations": [
              {"from": "human", "value": "<image>\nContext: N/A\nQuestion: Which animal is this?\nOptions: (A) cat (B) dog"},
              {"from": "gpt", "value": "A"}]},
          {"id": "12", "conversations": [
              {"from": "human", "value": "Context: N/A\nQuestion: Which is a fish?\nOptions: (A) cat (B) trout"},
              {"from": "gpt", "value": "B"}]},
          {"id": "13", "image": "13/image.png", "conversations": [
              {"from": "human", "value": "Question: What is in the cup?\nOptions: (A) coffee (B) milk\n<image>"},
              {"from": "gpt", "value": "A"}]}]
    write_json(tmp_path / "sqa.json", qs)
    return tmp_path / "sqa.json", img_dir


def test_science_parity_with_llava(tiny15, images, tmp_path, llava_in_process, capsys):
    qfile, img_dir = science_questions(tmp_path, images)
    common_args = ["--model-path", tiny15, "--question-file", qfile, "--image-folder", img_dir,
                   "--single-pred-prompt", "--temperature", "0", "--conv-mode", "vicuna_v1"]
    llava_in_process("model_vqa_science", common_args + ["--answers-file", tmp_path / "llava.jsonl"])
    rc, err = run("model_vqa_science", *common_args, "--answers-file", tmp_path / "ours.jsonl",
                  "--device", "cpu", "--max_new_tokens", NEW_TOKENS, capsys=capsys)
    assert rc == 0, err
    ours = read_jsonl(tmp_path / "ours.jsonl")
    assert strip_ids(ours) == strip_ids(read_jsonl(tmp_path / "llava.jsonl"))
    assert ours[0]["prompt"].startswith("<image>\nContext") and not ours[1]["prompt"].startswith("<image>")
    assert ours[1]["prompt"].endswith("Answer with the option's letter from the given choices directly.")
    assert ours[1]["metadata"]["visual_tokens"] == 0


def test_science_star_with_text_only_question(tiny15, images, tmp_path, capsys):
    qfile, img_dir = science_questions(tmp_path, images)
    rc, err = run("model_vqa_science", "--model-path", tiny15, "--question-file", qfile, "--image-folder", img_dir,
                  "--answers-file", tmp_path / "a.jsonl", "--temperature", "0", "--max_new_tokens", NEW_TOKENS,
                  "--device", "cpu", "--method", "star", "--budget", "29", "--batch-size", "3", capsys=capsys)
    assert rc == 0, err
    rows = read_jsonl(tmp_path / "a.jsonl")
    assert [r["question_id"] for r in rows] == ["11", "12", "13"]
    assert rows[0]["metadata"]["final_kept"] == 29 and rows[2]["metadata"]["final_kept"] == 29
    assert rows[1]["metadata"]["visual_tokens"] == 0


# ----------------------------------------------------------------------------- pruning, batches, chunks

def test_star_metadata_and_batches(tiny15, qdir, tmp_path, capsys):
    one, three = tmp_path / "b1.jsonl", tmp_path / "b3.jsonl"
    star = ["--method", "star", "--budget", "58"]
    assert run("model_vqa_loader", *base_args(tiny15, qdir, one, *star), capsys=capsys)[0] == 0
    assert run("model_vqa_loader", *base_args(tiny15, qdir, three, *star, "--batch-size", "3"),
               capsys=capsys)[0] == 0
    a, b = read_jsonl(one), read_jsonl(three)
    assert [r["question_id"] for r in b] == [0, 1, 2, 3]
    assert [r["text"] for r in b] == [r["text"] for r in a]  # left padding does not change answers
    for r in a + b:
        m = r["metadata"]
        assert m["method"] == "star" and m["budget"] == 58 and m["visual_tokens"] == 576
        assert m["stage1_kept"] == 504 and m["final_kept"] == 58
        assert 58 < m["t_eq"] < 576


def test_batches_without_pruning_match_llava_order(tiny15, qdir, tmp_path, reference, capsys):
    out = tmp_path / "b.jsonl"
    assert run("model_vqa_loader", *base_args(tiny15, qdir, out, "--batch-size", "3"), capsys=capsys)[0] == 0
    assert strip_ids(read_jsonl(out)) == strip_ids(reference)


def test_chunks_cover_the_file_in_order(tiny15, qdir, tmp_path, reference, capsys):
    rows = []
    for k in range(3):  # 4 questions in chunks of ceil(4/3) = 2: the third chunk is empty, as in llava
        out = tmp_path / f"3_{k}.jsonl"
        rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out, "--num-chunks", "3", "--chunk-idx", k),
                      capsys=capsys)
        assert rc == 0, err
        rows += read_jsonl(out)
    assert strip_ids(rows) == strip_ids(reference)


# ----------------------------------------------------------------------------- resume

def test_resume_after_crash_with_truncated_line(tiny15, qdir, tmp_path, reference, capsys):
    out = tmp_path / "a.jsonl"
    lines = [json.dumps(r) for r in reference]
    write_partial(out, [])
    out.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])  # killed mid-write
    with pytest.warns(UserWarning, match="incomplete"):
        rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out), capsys=capsys)
    assert rc == 0, err
    assert "2 already answered, 2 to go" in err
    rows = read_jsonl(out)
    assert [r["question_id"] for r in rows] == [0, 1, 2, 3]  # no duplicates, question order
    assert rows[:2] == reference[:2]                          # kept, not answered again
    assert strip_ids(rows) == strip_ids(reference)


def test_resume_out_of_order_partial_file_ends_in_question_order(tiny15, qdir, tmp_path, reference, capsys):
    out = tmp_path / "a.jsonl"
    write_partial(out, [reference[2], reference[0]])
    rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out), capsys=capsys)
    assert rc == 0, err
    rows = read_jsonl(out)
    assert [r["question_id"] for r in rows] == [0, 1, 2, 3]
    assert rows[0] == reference[0] and rows[2] == reference[2]
    assert strip_ids(rows) == strip_ids(reference)


def test_complete_file_is_left_alone_without_loading_the_model(tiny15, qdir, tmp_path, reference, monkeypatch,
                                                              capsys):
    out = tmp_path / "a.jsonl"
    write_partial(out, reference)
    before = out.read_bytes()
    # nothing is pending, so nothing loads
    monkeypatch.setattr(generation, "load_model", lambda *a: pytest.fail("the model was loaded"))
    rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out), capsys=capsys)
    assert rc == 0, err
    assert out.read_bytes() == before


def test_crash_keeps_answers_and_no_resume_keeps_old_file(tiny15, qdir, tmp_path, reference, monkeypatch, capsys):
    calls = {"n": 0}
    generate = generation.generate_batch

    def crash_on_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed
        return generate(*a, **k)

    monkeypatch.setattr(generation, "generate_batch", crash_on_third)
    out = tmp_path / "a.jsonl"
    rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out), capsys=capsys)
    assert rc == 130 and "the 2 answers so far are kept" in err and "run the same command again" in err
    assert "Traceback" not in err and len(err.strip().splitlines()[-1]) < 300
    assert strip_ids(read_jsonl(out)) == strip_ids(reference[:2])  # flushed, valid

    # --no-resume over a finished file: the old file stays whole until the new one is done
    write_jsonl(out, reference)
    before = out.read_bytes()
    calls["n"] = 0
    rc, _ = run("model_vqa_loader", *base_args(tiny15, qdir, out, "--no-resume"), capsys=capsys)
    assert rc == 130
    assert out.read_bytes() == before
    assert len(read_jsonl(str(out) + ".tmp")) == 2

    monkeypatch.setattr(generation, "generate_batch", generate)
    rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out, "--no-resume"), capsys=capsys)
    assert rc == 0, err
    rows = read_jsonl(out)
    assert strip_ids(rows) == strip_ids(reference)
    assert {r["answer_id"] for r in rows}.isdisjoint(r["answer_id"] for r in reference)  # answered anew
    assert not os.path.exists(str(out) + ".tmp")


def test_resume_refuses_answers_of_another_question_file(tiny15, qdir, tmp_path, reference, capsys):
    out = tmp_path / "a.jsonl"
    write_partial(out, [dict(reference[0], question_id=99)])
    rc, err = run("model_vqa_loader", *base_args(tiny15, qdir, out), capsys=capsys)
    assert rc == 2 and "not in this chunk" in err and "--no-resume" in err


# ----------------------------------------------------------------------------- input errors

def _qfile(tmp_path, rows):
    return write_jsonl(tmp_path / "q.jsonl", rows)


def test_duplicate_ids(tiny15, qdir, tmp_path, capsys):
    qs = read_jsonl(qdir / "questions.jsonl")[:2]
    qs[1]["question_id"] = qs[0]["question_id"]
    q = _qfile(tmp_path, qs)
    args = ["--model-path", tiny15, "--question-file", q, "--image-folder", qdir / "images",
            "--answers-file", tmp_path / "a.jsonl", "--temperature", "0", "--max_new_tokens", "2", "--device", "cpu"]
    rc, err = run("model_vqa_loader", *args, capsys=capsys)
    assert rc == 2 and "duplicate question_id 0" in err and "--allow-duplicate-ids" in err
    assert not (tmp_path / "a.jsonl").exists()
    # MME / TextVQA style: same id, different questions
    rc, err = run("model_vqa_loader", *args, "--allow-duplicate-ids", capsys=capsys)
    assert rc == 0, err
    assert [r["question_id"] for r in read_jsonl(tmp_path / "a.jsonl")] == [0, 0]
    # ... and re-running resumes by (id, question): nothing is answered twice
    rc, err = run("model_vqa_loader", *args, "--allow-duplicate-ids", capsys=capsys)
    assert rc == 0 and "2 already answered, 0 to go" in err
    # the very same question twice is refused even then
    _qfile(tmp_path, [qs[0], qs[0]])
    rc, err = run("model_vqa_loader", *args, "--allow-duplicate-ids", capsys=capsys)
    assert rc == 2 and "appears twice" in err


def test_empty_and_malformed_question_files(qdir, tmp_path, capsys):
    args = ["--model-path", "/nonexistent/llava-x", "--image-folder", qdir / "images",
            "--answers-file", tmp_path / "a.jsonl"]
    (tmp_path / "empty.jsonl").write_text("\n")
    rc, err = run("model_vqa_loader", *args, "--question-file", tmp_path / "empty.jsonl", capsys=capsys)
    assert rc == 2 and "has no questions" in err
    (tmp_path / "bad.jsonl").write_text('{"question_id": 1, "image": "a.jpg", "text": "q"}\n{"question_id": 2,\n')
    rc, err = run("model_vqa_loader", *args, "--question-file", tmp_path / "bad.jsonl", capsys=capsys)
    assert rc == 2 and "line 2: not valid JSON" in err
    (tmp_path / "nokey.jsonl").write_text('{"question_id": 1, "text": "q"}\n')
    rc, err = run("model_vqa_loader", *args, "--question-file", tmp_path / "nokey.jsonl", capsys=capsys)
    assert rc == 2 and "'image'" in err
    rc, err = run("model_vqa_loader", *args, "--question-file", tmp_path / "missing.jsonl", capsys=capsys)
    assert rc == 2 and "no such file" in err
    write_json(tmp_path / "s.json", [])
    rc, err = run("model_vqa_science", *args, "--question-file", tmp_path / "s.json", capsys=capsys)
    assert rc == 2 and "has no questions" in err
    assert not (tmp_path / "a.jsonl").exists()


def test_bad_flags_stop_before_the_model_loads(qdir, tmp_path, capsys):
    args = ["--model-path", "/nonexistent/llava-x", "--question-file", qdir / "questions.jsonl",
            "--image-folder", qdir / "images", "--answers-file", tmp_path / "a.jsonl", "--device", "cpu"]
    rc, err = run("model_vqa_loader", *args, "--conv-mode", "nope", capsys=capsys)
    assert rc == 2 and "--conv-mode 'nope'" in err
    rc, err = run("model_vqa_loader", *args, "--num_beams", "0", capsys=capsys)
    assert rc == 2 and "--num_beams" in err
    rc, err = run("model_vqa_loader", *args, capsys=capsys)  # the model does not load
    assert rc == 2 and "--model-path" in err
    assert not (tmp_path / "a.jsonl").exists()  # no empty answers file left behind


def test_host_errors_are_one_line_before_the_model_loads(tiny15, qdir, tmp_path, capsys):
    """--host hf on llava's checkpoint, --host llava on a llava-hf one, and a llava-hf checkpoint
    (auto: hf) in this transformers-4.37 environment: one line each, naming the way out. The
    hf run itself is tests_hf/test_hf_eval.py (.venv-hf)."""
    hf_dir = tmp_path / "llava-hf"
    write_json(hf_dir / "config.json", {"model_type": "llava"})
    args = ["--question-file", qdir / "questions.jsonl", "--image-folder", qdir / "images",
            "--answers-file", tmp_path / "a.jsonl", "--device", "cpu"]
    for model, host, needle in ((tiny15, "hf", "--host hf: --model-path "),
                                (hf_dir, "llava", "--host llava: --model-path "),
                                (hf_dir, "auto", "--host hf needs transformers 5 (this environment has 4.37.2): "
                                                 "run it with .venv-hf/bin/python")):
        rc, err = run("model_vqa_loader", "--model-path", model, "--host", host, *args, capsys=capsys)
        assert rc == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "a.jsonl").exists()


def test_resume_refuses_a_file_that_is_not_an_answers_file(qdir, tmp_path, capsys):
    # A complete (newline-terminated) last line that is not an answer is not an interrupted
    # write: the file must not be rewritten without it.
    out = tmp_path / "results.json"
    out.write_text('{"v1_0": "an MM-Vet results file"}\n')
    before = out.read_bytes()
    rc, err = run("model_vqa_loader", "--model-path", "/nonexistent/llava-x", "--question-file",
                  qdir / "questions.jsonl", "--image-folder", qdir / "images", "--answers-file", out, capsys=capsys)
    assert rc == 2 and "line 1: not a complete answer line" in err
    assert out.read_bytes() == before


def test_chunk_errors(qdir, tmp_path, capsys):
    args = ["--model-path", "/nonexistent/llava-x", "--question-file", qdir / "questions.jsonl",
            "--image-folder", qdir / "images", "--answers-file", tmp_path / "a.jsonl"]
    rc, err = run("model_vqa_loader", *args, "--num-chunks", "5", "--chunk-idx", "4", capsys=capsys)
    assert rc == 2 and "--num-chunks 5 is more than the 4 questions" in err
    rc, err = run("model_vqa_loader", *args, "--num-chunks", "2", "--chunk-idx", "2", capsys=capsys)
    assert rc == 2 and "--chunk-idx must be in 0..1" in err
    rc, err = run("model_vqa_loader", *args, "--method", "none", "--budget", "58", capsys=capsys)
    assert rc == 2 and "--budget needs a pruning --method" in err


def test_missing_image_is_reported_before_the_model_loads(qdir, tmp_path, capsys):
    qs = read_jsonl(qdir / "questions.jsonl")
    qs[3]["image"] = "no_such_photo.jpg"
    q = _qfile(tmp_path, qs)
    rc, err = run("model_vqa_loader", "--model-path", "/nonexistent/llava-x", "--question-file", q,
                  "--image-folder", qdir / "images", "--answers-file", tmp_path / "a.jsonl", capsys=capsys)
    assert rc == 2
    assert str(qdir / "images" / "no_such_photo.jpg") in err and "--skip-bad-images" in err
    rc, err = run("model_vqa_loader", "--model-path", "/nonexistent/llava-x", "--question-file", q,
                  "--image-folder", tmp_path / "nowhere", "--answers-file", tmp_path / "a.jsonl", capsys=capsys)
    assert rc == 2 and "--image-folder" in err and "nowhere" in err


def test_bad_images_stop_or_are_skipped(tiny15, qdir, tmp_path, capsys):
    qs = read_jsonl(qdir / "questions.jsonl")
    (tmp_path / "images").mkdir()
    for q in qs:
        os.symlink(qdir / "images" / q["image"], tmp_path / "images" / q["image"])
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    qs[1]["image"] = "broken.jpg"
    qs[2]["image"] = "gone.jpg"
    q = _qfile(tmp_path, qs)
    args = ["--model-path", tiny15, "--question-file", q, "--image-folder", tmp_path / "images",
            "--temperature", "0", "--max_new_tokens", "2", "--device", "cpu"]
    # unreadable image, found while running: a clear error naming the file; earlier answers kept
    qs_ok = [qs[0], qs[1]]
    rc, err = run("model_vqa_loader", *args[:3], _qfile(tmp_path, qs_ok), *args[4:],
                  "--answers-file", tmp_path / "stop.jsonl", capsys=capsys)
    assert rc == 2 and "cannot read image" in err and "broken.jpg" in err
    assert [r["question_id"] for r in read_jsonl(tmp_path / "stop.jsonl")] == [0]

    _qfile(tmp_path, qs)
    rc, err = run("model_vqa_loader", *args, "--answers-file", tmp_path / "a.jsonl", "--skip-bad-images",
                  "--batch-size", "2", capsys=capsys)
    assert rc == 0, err
    assert [r["question_id"] for r in read_jsonl(tmp_path / "a.jsonl")] == [0, 3]
    skipped = read_jsonl(tmp_path / "a.skipped.jsonl")
    assert sorted(s["question_id"] for s in skipped) == [1, 2]
    reasons = {s["question_id"]: s["error"] for s in skipped}
    assert "broken.jpg" in reasons[1] and "gone.jpg" in reasons[2]
    assert "2 question(s) skipped" in err


def test_next_unpruned_counts_match_the_engines(tiny_dir, qdir, tmp_path):
    """LLaVA-NeXT: --method none (stock llava) records the same patch count per question as a
    pruned run (newline rows left out), and counts the newline rows in t_eq as the engine does."""
    model = tiny_dir("llava-next")
    runs = {}
    for method in (["--method", "none"], ["--method", "star", "--budget", "58"]):
        out = tmp_path / f"{method[1]}.jsonl"
        args = base_args(model, qdir, out, *method)
        assert model_vqa_loader.main([str(a) for a in args]) == 0
        runs[method[1]] = [r["metadata"] for r in read_jsonl(out)]
    for none, star in zip(runs["none"], runs["star"]):
        assert none["visual_tokens"] == star["visual_tokens"] == none["final_kept"] > 576
        assert none["t_eq"] > none["visual_tokens"]  # one newline per row of the unpadded grid
        assert star["final_kept"] == 58


def test_next_budget_that_cannot_be_met_exactly_is_noted_once(tiny_dir, qdir, tmp_path, capsys):
    """FasterVLM --budget 58 on a multi-crop image keeps ceil(58 / crops) per crop: the runner
    says so once (issue 14, item 5); STAR's decoder stage keeps exactly 58 and says nothing."""
    model = tiny_dir("llava-next")
    for method, noted in ((["--method", "fastervlm", "--budget", "58"], True),
                          (["--method", "star", "--budget", "58"], False)):
        out = tmp_path / f"{method[1]}.jsonl"
        assert model_vqa_loader.main([str(a) for a in base_args(model, qdir, out, *method)]) == 0
        err = capsys.readouterr().err
        kept = [r["metadata"]["final_kept"] for r in read_jsonl(out)]
        assert (err.count("note: --budget 58 keeps") == 1) == noted, err[-500:]
        assert noted == any(k != 58 for k in kept)
