"""scripts/eval/<bench>.sh end to end on CPU: the tiny checkpoint answers a small copy of each
benchmark laid out like the real one (tests/fixtures_eval.py, real scikit-image photos), then
the stage after it (merge, convert, score) runs, for --method none and --method star."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_eval import build_all, env_without_cuda, read_jsonl

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "eval"
BENCHES = ["mme", "pope", "gqa", "vqav2", "textvqa", "sqa", "vizwiz", "mmvet"]
FAST = ["--max_new_tokens", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, images):
    root = tmp_path_factory.mktemp("eval")
    return root, build_all(root, images)


def _env(eval_dir, extra=None):
    return env_without_cuda({"PYTHON": sys.executable, "EVAL_DIR": str(eval_dir), "HF_HUB_OFFLINE": "1",
                             "TRANSFORMERS_OFFLINE": "1", **(extra or {})})


def _check(bench, p):
    assert p.returncode == 0, f"{bench}.sh failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"


def script(bench, model, *flags, eval_dir, env=None, check=True):
    p = subprocess.run(["bash", str(SCRIPTS / f"{bench}.sh"), str(model), *map(str, flags)],
                       capture_output=True, text=True, env=_env(eval_dir, env), timeout=300)
    if check:
        _check(bench, p)
    return p


def scripts_in_parallel(bench, model, runs, eval_dir, env=None):
    """Run the script once per flag list, all at once (one torch thread each): the two methods
    of a benchmark share the 2 CPU cores instead of queueing."""
    env = _env(eval_dir, {"OMP_NUM_THREADS": "1", **(env or {})})
    procs = [subprocess.Popen(["bash", str(SCRIPTS / f"{bench}.sh"), str(model), *map(str, flags)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for flags in runs]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    for p in done:
        _check(bench, p)
    return done


# Where each script leaves its answers and its headline scores, for a given CKPT.
def outputs(root: Path, bench: str, ckpt: str):
    answers = {
        "mme": root / "MME" / "answers" / f"{ckpt}.jsonl",
        "pope": root / "pope" / "answers" / f"{ckpt}.jsonl",
        "gqa": root / "gqa" / "answers" / "llava_gqa_testdev_balanced" / ckpt / "merge.jsonl",
        "vqav2": root / "vqav2" / "answers" / "llava_vqav2_mscoco_test-dev2015" / ckpt / "merge.jsonl",
        "textvqa": root / "textvqa" / "answers" / f"{ckpt}.jsonl",
        "sqa": root / "scienceqa" / "answers" / f"{ckpt}.jsonl",
        "vizwiz": root / "vizwiz" / "answers" / f"{ckpt}.jsonl",
        "mmvet": root / "mm-vet" / "answers" / f"{ckpt}.jsonl",
    }[bench]
    if bench in ("gqa", "vqav2"):
        scores = answers.parent / "scores.json"
    else:
        scores = answers.parent / f"{ckpt}_scores.json"
    return answers, scores


def expected_questions(bench, info):
    """(question_id, prompt) of every question, in file order, as the answers must list them."""
    if bench == "sqa":
        out = []
        for q in info["questions"]:
            prompt = q["conversations"][0]["value"].replace("<image>", "").strip()
            if "image" in q:
                prompt = "<image>\n" + prompt
            out.append((q["id"], prompt + "\nAnswer with the option's letter from the given choices directly."))
        return out
    return [(q["question_id"], q["text"]) for q in info["questions"]]


@pytest.mark.parametrize("bench", BENCHES)
def test_script_end_to_end(bench, workspace, tiny15):
    root, data = workspace
    env = {"SCORE_ARGS": "--allow-missing"} if bench == "mme" else {}  # the fixture asks 4 of MME's questions
    scripts_in_parallel(bench, tiny15, [["--method", "none", *FAST], ["--method", "star", "--budget", "58", *FAST]],
                        eval_dir=root, env=env)
    for method, ckpt in [("none", "llava-v1.5-tiny_none"), ("star", "llava-v1.5-tiny_star-b58")]:
        check_outputs(bench, method, ckpt, root, data)


def check_outputs(bench, method, ckpt, root, data):
    answers, scores = outputs(root, bench, ckpt)
    rows = read_jsonl(answers)
    assert [(r["question_id"], r["prompt"]) for r in rows] == expected_questions(bench, data[bench])
    for r in rows:
        assert list(r) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
        assert r["model_id"] == "llava-v1.5-tiny" and r["metadata"]["method"] == method
        if r["metadata"]["visual_tokens"]:  # ScienceQA has a text-only problem
            assert r["metadata"]["final_kept"] == (58 if method == "star" else 576)
    headline = json.loads(scores.read_text())
    assert headline["benchmark"] == bench

    if bench == "mme":
        assert headline["answers"] == 4 and headline["missing"] == 24
    elif bench == "pope":
        assert set(headline) >= {"adversarial", "popular", "random", "mean_f1"}
    elif bench == "gqa":
        preds = json.loads((answers.parent / "testdev_balanced_predictions.json").read_text())
        assert [p["questionId"] for p in preds] == [q["question_id"] for q in data["gqa"]["questions"]]
        assert headline["questions"] == 4 and headline["missing"] == 0
    elif bench == "vqav2":
        upload = json.loads((root / "vqav2" / "answers_upload" / "llava_vqav2_mscoco_test-dev2015" /
                             f"{ckpt}.json").read_text())
        assert [u["question_id"] for u in upload] == [q["question_id"] for q in data["vqav2"]["split"]]
        assert headline["answered"] == 3 and headline["missing"] == 1
    elif bench == "textvqa":
        assert headline["samples"] == 3 and headline["missing"] == 0
    elif bench == "sqa":
        assert headline["count"] == 3 and headline["img_count"] == 2
        assert (answers.parent / f"{ckpt}_result.json").exists()
        assert (answers.parent / f"{ckpt}_output.jsonl").exists()
    elif bench == "vizwiz":
        upload = json.loads((root / "vizwiz" / "answers_upload" / f"{ckpt}.json").read_text())
        assert [u["image"] for u in upload] == [q["image"] for q in data["vizwiz"]["questions"]]
    elif bench == "mmvet":
        results = json.loads((root / "mm-vet" / "results" / f"{ckpt}.json").read_text())
        assert list(results) == ["v1_0", "v1_1"]


def test_one_chunk_per_gpu_merged_in_order_and_resumed(workspace, tiny15, tmp_path):
    """CUDA_VISIBLE_DEVICES=0,1: two chunks in parallel (on the CPU here, --device cpu), merged in
    question order into the same answers a single chunk gives; a re-run only resumes."""
    root, data = workspace
    env = {"CKPT": "two-chunks", "OMP_NUM_THREADS": "1"}
    p = script("gqa", tiny15, "--method", "star", "--budget", "29", *FAST, eval_dir=root,
               env={**env, "CUDA_VISIBLE_DEVICES": "0,1"})
    out = root / "gqa" / "answers" / "llava_gqa_testdev_balanced" / "two-chunks"
    assert len(read_jsonl(out / "2_0.jsonl")) == 2 and len(read_jsonl(out / "2_1.jsonl")) == 2
    merged = read_jsonl(out / "merge.jsonl")
    assert [r["question_id"] for r in merged] == [q["question_id"] for q in data["gqa"]["questions"]]
    assert all(r["metadata"]["final_kept"] == 29 for r in merged)

    # the same questions in one chunk, in-process
    from llava_star.eval import model_vqa_loader

    single = tmp_path / "one.jsonl"
    gqa = root / "gqa"
    assert model_vqa_loader.main([
        "--model-path", str(tiny15), "--question-file", str(gqa / "llava_gqa_testdev_balanced.jsonl"),
        "--image-folder", str(gqa / "data" / "images"), "--answers-file", str(single), "--temperature", "0",
        "--conv-mode", "vicuna_v1", "--method", "star", "--budget", "29", *FAST]) == 0
    assert [r["text"] for r in read_jsonl(single)] == [r["text"] for r in merged]

    again = script("gqa", tiny15, "--method", "star", "--budget", "29", *FAST, eval_dir=root,
                   env={**env, "CUDA_VISIBLE_DEVICES": "0,1"})
    assert again.stderr.count("2 already answered, 0 to go") == 2
    assert read_jsonl(out / "merge.jsonl") == merged  # same lines, same answer ids


def test_missing_data_names_the_expected_path(tmp_path, tiny15):
    for bench, expected in [("mme", "MME/llava_mme.jsonl"), ("sqa", "scienceqa/llava_test_CQM-A.json"),
                            ("mmvet", "mm-vet/llava-mm-vet.jsonl"), ("pope", "pope/llava_pope_test.jsonl")]:
        p = script(bench, tiny15, eval_dir=tmp_path / "nothing-here", check=False)
        assert p.returncode != 0
        assert str(tmp_path / "nothing-here" / expected) in p.stderr, p.stderr


def test_usage_and_ckpt_names(tmp_path):
    p = subprocess.run(["bash", str(SCRIPTS / "pope.sh")], capture_output=True, text=True,
                       env=env_without_cuda({"EVAL_DIR": str(tmp_path)}))
    assert p.returncode == 2 and "usage: bash scripts/eval/pope.sh MODEL_PATH" in p.stderr

    def name(*args):
        cmd = f'source "{SCRIPTS / "_common.sh"}"; ckpt_name "$@"'
        return subprocess.run(["bash", "-c", cmd, "x", *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert name("liuhaotian/llava-v1.5-7b") == "llava-v1.5-7b_none"
    assert name("/ckpts/llava-v1.5-13b/", "--method", "star", "--budget", "58", "--batch-size", "8") == \
        "llava-v1.5-13b_star-b58"
    assert name("m/llava-v1.5-7b", "--method=fastv", "--budget=115", "--fastv-k", "3") == "llava-v1.5-7b_fastv-b115-fastv-k3"
    assert name("m/llava-v1.5-7b", "--method", "sparsevlm", "--sparsevlm-layers", "2,6,15", "--no-resume") == \
        "llava-v1.5-7b_sparsevlm-sparsevlm-layers2-6-15"
    assert name("runs/llava-x/checkpoint-500", "--method", "none") == "llava-x_checkpoint-500_none"
    # flags new to the registry name the run too, switches without a value
    assert name("m/llava-v1.5-7b", "--method", "sparsevlm", "--budget", "64", "--no-sparsevlm-recycle",
                "--positions", "original") == "llava-v1.5-7b_sparsevlm-b64-no-sparsevlm-recycle-positionsoriginal"
    assert name("m/llava-v1.5-7b", "--method", "visionzip", "--visionzip-dominant", "54") == \
        "llava-v1.5-7b_visionzip-visionzip-dominant54"


def test_next_mistral_checkpoint_end_to_end(workspace, tiny_dir):
    """A LLaVA-NeXT-Mistral checkpoint through pope.sh: the conversation template follows the
    model name, anyres images go through the runner, per-crop budgets reach the record."""
    root, data = workspace
    model = tiny_dir("llava-mistral")
    p = script("pope", model, "--method", "star", "--budget", "29", "--budget-unit", "crop", *FAST, eval_dir=root)
    assert "conv mode mistral_instruct" in p.stderr
    ckpt = f"{Path(model).name}_star-b29-budget-unitcrop"
    answers, scores = outputs(root, "pope", ckpt)
    rows = read_jsonl(answers)
    assert [(r["question_id"], r["prompt"]) for r in rows] == expected_questions("pope", data["pope"])
    for r in rows:
        meta = r["metadata"]
        assert meta["visual_tokens"] > 576 and meta["final_kept"] % 29 == 0 and meta["final_kept"] >= 3 * 29
    assert json.loads(scores.read_text())["benchmark"] == "pope"


def test_default_conv_mode():
    def mode(path):
        cmd = f'source "{SCRIPTS / "_common.sh"}"; default_conv_mode "$1"'
        return subprocess.run(["bash", "-c", cmd, "x", path], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert mode("liuhaotian/llava-v1.5-7b") == "vicuna_v1"
    assert mode("liuhaotian/llava-v1.6-vicuna-13b/") == "vicuna_v1"
    assert mode("liuhaotian/llava-v1.6-Mistral-7b") == "mistral_instruct"
    assert mode("liuhaotian/llava-v1.6-34b") == "chatml_direct"


def test_limit_writes_names_of_its_own_and_scores_partially(workspace, tiny15):
    """--limit 2: a smoke run of the first two questions, under <CKPT>-limit2, scored as the
    partial run it is; the full run's files are never written."""
    root, data = workspace
    ckpt = "smoke-test"  # a name no other test writes
    p = script("pope", tiny15, "--method", "star", "--budget", "58", "--limit", "2", *FAST, eval_dir=root,
               env={"CKPT": ckpt})
    answers, scores = outputs(root, "pope", ckpt + "-limit2")
    assert [r["question_id"] for r in read_jsonl(answers)] == [q["question_id"] for q in data["pope"]["questions"][:2]]
    payload = json.loads(scores.read_text())
    assert (payload["answered"], payload["total"]) == (2, len(data["pope"]["questions"]))
    assert "Scored 2 of 4 questions (PARTIAL" in p.stdout
    full_answers, full_scores = outputs(root, "pope", ckpt)
    assert not full_answers.exists() and not full_scores.exists()


def test_resume_with_other_settings_stops_naming_them(workspace, tiny15):
    """The same CKPT re-run with another method: the runner refuses before the model loads,
    naming the settings that differ and how to start over; nothing is appended."""
    root, _ = workspace
    env = {"CKPT": "settings-check"}
    script("pope", tiny15, "--method", "star", "--budget", "58", "--limit", "1", *FAST, eval_dir=root, env=env)
    answers, _ = outputs(root, "pope", "settings-check-limit1")
    before = answers.read_bytes()
    p = script("pope", tiny15, "--method", "fastv", "--budget", "29", "--limit", "1", *FAST, eval_dir=root,
               env=env, check=False)
    assert p.returncode != 0
    err = p.stderr
    assert "was made with other settings" in err and "--method/--budget" in err and '"fastv"' in err
    assert "--no-resume" in err and "Traceback" not in err and "1 already answered" not in err
    assert answers.read_bytes() == before


def test_one_conv_mode_rule_for_scripts_runners_demo_and_visualizer():
    """scripts/eval, the demo and the visualizer take the template from llava_star.prompting."""
    from llava_star import demo, prompting

    names = ["liuhaotian/llava-v1.5-7b", "liuhaotian/llava-v1.6-34b", "llava-v1.6-mistral-7b-tiny",
             "runs/llava-34b-custom/checkpoint-10", "liuhaotian/llava-llama-2-13b-chat-lightning-preview"]
    cmd = f'source "{SCRIPTS / "_common.sh"}"; for n in "$@"; do default_conv_mode "$n"; done'
    script_modes = subprocess.run(["bash", "-c", cmd, "x", *names], capture_output=True, text=True, check=True,
                                  env={**env_without_cuda(), "PYTHON": sys.executable}).stdout.split()
    assert script_modes == [prompting.conv_mode_for(n) for n in names]
    assert script_modes[1:4] == ["chatml_direct", "mistral_instruct", "vicuna_v1"]  # demo and scripts disagreed on 34b
    assert demo.conv_mode_for is prompting.conv_mode_for
    assert "conv_mode_for" in (Path(demo.__file__).parent / "visualize.py").read_text()
