"""`--model llava_star` in lmms-eval 0.7.3, on the tiny checkpoint and local tasks (offline).

- the real CLI (`python -m lmms_eval`, one `--config` run listing every method, batch 4)
  answers a generation task and a multiple-choice task; every request's pruning record is in
  the samples file;
- generation answers and records equal `llava_star.eval.model_vqa_loader`'s for the same
  questions and settings;
- multiple-choice scores equal an independent computation: the whole prompt (context and
  answer) run through the model without a cache, the context's selections replayed, and for
  `none` stock llava's own `labels` loss (lmms-eval's llava model's number);
- batch 1 (lmms-eval's Python API, one TaskManager) equals batch 4 (the CLI run);
- two data-parallel processes (accelerate) equal one;
- bad `--model_args` are one line naming the key, through the CLI and in-process.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import load_star, load_stock
from fixtures_lmms import NEW_TOKENS, build_tasks

METHODS = ("none", "star", "fastv", "fastervlm", "sparsevlm", "pdrop", "visionzip", "random")
# SparseVLM without recycling too (its recycling ranks near-duplicate DPC-kNN densities by
# index, so batch 1 and 4 agree with recycling on as well).
NO_RECYCLE = "sparsevlm-norecycle"
VARIANTS = METHODS + (NO_RECYCLE,)
BUDGET = {"none": None, "sparsevlm": 64}  # SparseVLM runs its published schedules; the rest 58
LOSS_TOL = dict(rel=1e-4, abs=1e-4)  # fp32, different padding / batch rows


def method_of(variant):
    return "sparsevlm" if variant == NO_RECYCLE else variant


def budget(variant):
    return BUDGET.get(method_of(variant), 58)


def model_args(tiny, variant, extra=""):
    b = budget(variant)
    extra = (",sparsevlm_recycle=false" if variant == NO_RECYCLE else "") + extra
    return f"pretrained={tiny},method={method_of(variant)}" + (f",budget={b}" if b is not None else "") + extra


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are small: one thread is as fast, and a second one that the shared
    CPU deschedules stalls every op (the lmms-eval processes get OMP_NUM_THREADS=1 too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lmms(tiny15, images, tmp_path_factory):
    """The tasks, and an offline environment for lmms-eval (its own HF cache under tmp)."""
    root = tmp_path_factory.mktemp("lmms")
    info = build_tasks(root, images)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf"),
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return {**info, "root": root, "env": env, "tiny": tiny15}


def run_cli(argv, env, log: Path, timeout=600, launcher=("-m", "lmms_eval")):
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, *launcher, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout)
    return proc.returncode, log.read_text(errors="replace")


def read_samples(out_dir: Path, task: str):
    (path,) = Path(out_dir).glob(f"*/*_samples_{task}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def gen_answers(samples):
    """doc_id -> (answer, record), from the samples file or lmms-eval's in-memory samples."""
    out = {}
    for s in samples:
        text = s["filtered_resps"]
        out[s["doc_id"]] = (text[0] if isinstance(text, list) else text, s["token_counts"][0]["llava_star"])
    return out


def mc_scores(samples):
    """doc_id -> [(mean NLL, greedy) per choice], [record per choice]."""
    out = {}
    for s in samples:
        pairs = [(float(loss), str(greedy) == "True") for loss, greedy in s["filtered_resps"]]
        out[s["doc_id"]] = (pairs, [tc["llava_star"] for tc in s["token_counts"]])
    return out


@pytest.fixture(scope="module")
def cli4(lmms):
    """The CLI, one process per run, every method at batch 4, both tasks, --log_samples: two
    `--config` runs side by side (most of a run is lmms-eval indexing its own task YAMLs, once
    per config, on one core)."""
    root, runs = lmms["root"], []
    for part, methods in enumerate((METHODS[::2], METHODS[1::2])):
        configs = [{"model": "llava_star", "model_args": model_args(lmms["tiny"], m),
                    "tasks": f"{lmms['gen']},{lmms['mc']}", "include_path": str(lmms["include"]),
                    "batch_size": 4, "log_samples": True, "output_path": str(root / "cli4" / m)} for m in methods]
        (root / f"cli4-{part}.yaml").write_text(yaml.safe_dump(configs))
        log = open(root / f"cli4-{part}.log", "w")
        runs.append((subprocess.Popen([sys.executable, "-m", "lmms_eval", "--config", str(root / f"cli4-{part}.yaml")],
                                      env=lmms["env"], stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in runs:
        rc = proc.wait(timeout=600)
        log.close()
        text = Path(log.name).read_text(errors="replace")
        assert rc == 0 and "Traceback" not in text, text[-3000:]
    return {m: {"gen": gen_answers(read_samples(root / "cli4" / m, lmms["gen"])),
                "mc": mc_scores(read_samples(root / "cli4" / m, lmms["mc"])),
                "results": json.loads(next((root / "cli4" / m).glob("*/*_results.json")).read_text())["results"]}
            for m in METHODS}


def test_every_method_answers_both_tasks_with_its_record(cli4, lmms):
    n_layers = json.loads((Path(lmms["tiny"]) / "config.json").read_text())["num_hidden_layers"]
    for m in METHODS:
        run = cli4[m]
        assert set(run["results"]) == {lmms["gen"], lmms["mc"]}, m
        assert "exact_match,none" in run["results"][lmms["gen"]] and "acc,none" in run["results"][lmms["mc"]]
        assert sorted(run["gen"]) == list(range(len(lmms["gen_docs"])))
        assert sorted(run["mc"]) == list(range(len(lmms["mc_docs"])))
        records = [r for _, r in run["gen"].values()] + [r for _, rs in run["mc"].values() for r in rs]
        for r in records:
            assert r["method"] == m and r.get("budget") == budget(m)
            assert len(r["tokens_per_layer"]) == n_layers and len(r["kept"]) == r["final_kept"]
            assert r["visual_tokens"] == 576
            if m == "none":
                assert r["final_kept"] == 576 and set(r["tokens_per_layer"]) == {576}
            else:  # pruned: fewer tokens at the end than in, some layer below the full count
                assert r["final_kept"] < 576 and min(r["tokens_per_layer"]) < 576
        # each choice of a question shares its context's (one) pruning
        for _, rs in run["mc"].values():
            assert all(r == rs[0] for r in rs)
    kept = {m: cli4[m]["gen"][0][1]["kept"] for m in METHODS if m != "none"}
    assert len({tuple(k) for k in kept.values()}) == len(kept), "two methods kept the same tokens"


@pytest.mark.parametrize("method", METHODS)
def test_generation_equals_model_vqa_loader(api1, lmms, method, tmp_path):
    """Same questions and settings (batch 1): same answers and records."""
    from llava_star.eval import model_vqa_loader

    answers = tmp_path / "answers.jsonl"
    argv = ["--model-path", lmms["tiny"], "--question-file", lmms["questions"], "--image-folder", lmms["images"],
            "--answers-file", answers, "--temperature", "0", "--max_new_tokens", NEW_TOKENS, "--device", "cpu",
            "--conv-mode", "vicuna_v1", "--method", method]
    if budget(method) is not None:
        argv += ["--budget", budget(method)]
    assert model_vqa_loader.main([str(a) for a in argv]) == 0
    runner = {json.loads(line)["question_id"]: json.loads(line) for line in answers.read_text().splitlines()}
    for doc_id, (text, record) in api1[method]["gen"].items():
        ref = runner[lmms["gen_docs"][doc_id]["id"]]
        assert text == ref["text"], (method, doc_id)
        assert {k: record[k] for k in ref["metadata"]} == ref["metadata"], (method, doc_id)


def _conv_prompts(question: str, continuation: str):
    """lmms-eval's llava model's prompts (its own code path: llava's templates directly)."""
    from llava.conversation import conv_templates

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    context = conv.get_prompt()
    conv.messages[1][1] = continuation
    return context, conv.get_prompt()


def _reference_losses(model, tokenizer, processor, doc):
    """Mean NLL of each choice: the whole prompt without a cache, the selections of a prefill
    of the context alone replayed (pruning decided by the context, applied to the answer)."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token

    from llava_star.engine.seams import Recorded, hooks

    def ids(prompt):
        return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]

    image = Image.open(doc["image"]).convert("RGB")
    pixels = process_images([image], processor, model.config)
    recorded, losses = Recorded(), []
    with torch.no_grad():
        with hooks(model, selector=recorded):
            context = ids(_conv_prompts(doc["question"], "")[0])
            model(context, images=pixels, image_sizes=[image.size], use_cache=False)
        for choice in doc["choices"]:
            ctx, full = _conv_prompts(doc["question"], " " + choice)
            full_ids = ids(full)
            n = full_ids.shape[1] - ids(ctx).shape[1]
            with hooks(model, selector=recorded.replay()):
                logits = model(full_ids, images=pixels, image_sizes=[image.size], use_cache=False).logits[0]
            logp = logits[-n - 1:-1].log_softmax(-1)
            losses.append(float(-logp.gather(1, full_ids[0, -n:, None]).mean()))
    return losses


@pytest.mark.parametrize("method", METHODS)
def test_multiple_choice_equals_full_prompt_with_replayed_pruning(api1, lmms, method):
    from llava_star import MethodConfig

    tok, model, proc = load_star(lmms["tiny"], MethodConfig.from_name(method, budget=budget(method)))
    for doc_id, (pairs, _) in api1[method]["mc"].items():
        ref = _reference_losses(model, tok, proc, lmms["mc_docs"][doc_id])
        assert [loss for loss, _ in pairs] == pytest.approx(ref, **LOSS_TOL), (method, doc_id)
        assert len(set(ref)) == len(ref)  # choices differ, so a mixed-up choice would show


def test_multiple_choice_none_equals_stock_llava_labels_loss(api1, lmms):
    """What lmms-eval's own `llava` model returns: llava's loss with the context masked."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import process_images, tokenizer_image_token

    tok, model, proc = load_stock(lmms["tiny"])
    for doc_id, (pairs, _) in api1["none"]["mc"].items():
        doc = lmms["mc_docs"][doc_id]
        image = Image.open(doc["image"]).convert("RGB")
        pixels = process_images([image], proc, model.config)
        for (loss, _), choice in zip(pairs, doc["choices"]):
            ctx, full = _conv_prompts(doc["question"], " " + choice)
            ctx_ids, full_ids = (tokenizer_image_token(p, tok, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
                                 for p in (ctx, full))
            labels = full_ids.clone()
            labels[0, :ctx_ids.shape[1]] = -100
            with torch.no_grad():
                ref = model(full_ids, labels=labels, images=pixels, image_sizes=[image.size]).loss
            assert loss == pytest.approx(float(ref), **LOSS_TOL), (doc_id, choice)


@pytest.fixture(scope="module")
def api1(lmms):
    """lmms-eval's Python API (the CLI's own `simple_evaluate`) with one TaskManager (indexing
    lmms-eval's tasks costs seconds per run): every variant at batch 1, and SparseVLM without
    recycling at batch 4 (keyed "<variant>@4")."""
    saved = dict(os.environ)
    os.environ.update({k: lmms["env"][k] for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HF_HOME")})
    try:
        from lmms_eval import evaluator
        from lmms_eval.tasks import TaskManager

        manager = TaskManager("WARNING", include_path=str(lmms["include"]))
        out = {}
        for m, batch in [(v, 1) for v in VARIANTS] + [(NO_RECYCLE, 4)]:
            res = evaluator.simple_evaluate(model="llava_star", model_args=model_args(lmms["tiny"], m),
                                            tasks=[lmms["gen"], lmms["mc"]], batch_size=batch, log_samples=True,
                                            task_manager=manager, verbosity="WARNING")
            key = m if batch == 1 else f"{m}@{batch}"
            out[key] = {"gen": gen_answers(res["samples"][lmms["gen"]]), "mc": mc_scores(res["samples"][lmms["mc"]])}
        return out
    finally:
        os.environ.clear()
        os.environ.update(saved)


def assert_same_runs(a, b, what):
    assert a["gen"] == b["gen"], what  # answers and records, exactly
    assert a["mc"].keys() == b["mc"].keys()
    for doc_id, (pairs, records) in a["mc"].items():
        other, other_records = b["mc"][doc_id]
        assert [p[0] for p in pairs] == pytest.approx([p[0] for p in other], **LOSS_TOL), (what, doc_id)
        assert [p[1] for p in pairs] == [p[1] for p in other] and records == other_records, (what, doc_id)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_1_equals_batch_4(api1, cli4, variant):
    if variant == NO_RECYCLE:  # both through the API
        assert_same_runs(api1[variant], api1[f"{variant}@4"], f"{variant}: batch 1 vs batch 4 (API)")
        return
    assert_same_runs(api1[variant], cli4[variant], f"{variant}: batch 1 (API) vs batch 4 (CLI)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_data_parallel_processes_equal_one(cli4, lmms):
    """accelerate's data parallelism on CPU: `accelerate launch --cpu` starts one process only
    (more need mpirun), so the multi-process launcher runs with ACCELERATE_USE_CPU=1."""
    out = lmms["root"] / "dp"
    env = dict(lmms["env"], ACCELERATE_USE_CPU="1")
    launcher = ("-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                "-m", "lmms_eval")
    rc, log = run_cli(["--model", "llava_star", "--model_args", model_args(lmms["tiny"], "star"),
                       "--tasks", f"{lmms['gen']},{lmms['mc']}", "--include_path", str(lmms["include"]),
                       "--batch_size", "4", "--log_samples", "--output_path", str(out)],
                      env, lmms["root"] / "dp.log", launcher=launcher)
    assert rc == 0 and "Traceback" not in log, log[-3000:]
    assert "Running on rank 1" in log, "the second process did not evaluate"
    two = {"gen": gen_answers(read_samples(out, lmms["gen"])), "mc": mc_scores(read_samples(out, lmms["mc"]))}
    assert_same_runs(two, cli4["star"], "two processes vs one")
    results = json.loads(next(out.glob("*/*_results.json")).read_text())["results"]
    for task in (lmms["gen"], lmms["mc"]):
        metric = "exact_match,none" if task == lmms["gen"] else "acc,none"
        assert results[task][metric] == cli4["star"]["results"][task][metric]


def test_bad_model_args_through_the_cli_one_line(lmms):
    rc, log = run_cli(["--model", "llava_star", "--model_args", model_args(lmms["tiny"], "star", ",star_layr=3"),
                       "--tasks", lmms["gen"], "--include_path", str(lmms["include"])],
                      lmms["env"], lmms["root"] / "bad.log")
    last = log.strip().splitlines()[-1]
    assert rc != 0 and "Traceback" not in log, log[-2000:]
    assert last.startswith("llava_star: error: --model_args: unknown key star_layr (did you mean star_layer?)"), last


@pytest.mark.parametrize("kwargs, says", [
    ({"method": "star", "star_layer": "x"}, "star_layer: invalid int value: 'x'"),
    ({"method": "star", "fastv_k": 3}, "fastv_k does not apply to method=star"),
    ({"method": "stra"}, "method: invalid choice: 'stra'"),
    ({"method": "fastv", "budget": 58, "fastv_keep": 20}, "budget and fastv_keep both set"),
    ({"method": "none", "budget": 58}, "budget needs a pruning method (got method=none)"),
    ({"method": "sparsevlm", "sparsevlm_recycle": 3}, "sparsevlm_recycle must be true or false"),
    ({"method": "pdrop", "pdrop_layers": "[8,x]"}, "pdrop_layers"),
    ({"method": "star", "budget_unit": "tile"}, "budget_unit: invalid choice: 'tile'"),
    ({"attn_implementation": "flash"}, "attn_implementation: invalid choice: 'flash'"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"method": "star", "star_layer": 99}, "pretrained="),  # outside the tiny model's layers
    ({"conv_template": "nope"}, "conv_template=nope is not one of llava's templates"),
])
def test_bad_model_args_in_process(tiny15, kwargs, says):
    from llava_star.lmms.model import LlavaStar

    with pytest.raises(SystemExit) as e:
        LlavaStar(pretrained=tiny15, **kwargs)
    message = str(e.value.code)
    assert message.startswith("llava_star: error: ") and "\n" not in message and says in message, message


def test_bad_pretrained_and_missing_pretrained(tmp_path):
    from llava_star.lmms.model import LlavaStar

    with pytest.raises(SystemExit, match=r"pretrained=.*no such directory"):
        LlavaStar(pretrained=str(tmp_path / "nothing"), method="star")
    with pytest.raises(SystemExit, match="the following arguments are required: pretrained"):
        LlavaStar(method="star")


def test_model_args_keys_follow_the_registry():
    """Every method knob with a CLI flag is a key, spelled as the flag."""
    from llava_star.lmms import model_args
    from llava_star.methods import METHODS as ALL, knobs_of

    keys = model_args.keys()
    flags = {k.flag for m in ALL for k in knobs_of(m) if k.flag is not None}
    assert len(flags) > 15
    for flag in flags:
        assert flag.lstrip("-").replace("-", "_") in keys
    assert {"method", "budget", "budget_unit", "attn_implementation", "fixed_grid", "pretrained"} <= set(keys)
    args = model_args.parse({"pretrained": "x", "method": "pdrop", "pdrop_layers": "[2,4,6]",
                             "pdrop_ratios": "'0.5,0.25,0.1'", "batch_size": "4", "max_batch_size": None})
    assert args.method_config.knobs == {"layers": (2, 4, 6), "ratios": (0.5, 0.25, 0.1)} and args.batch_size == 4


def test_registered_by_entry_point_and_versions_kept():
    from importlib.metadata import entry_points, version

    from lmms_eval.models import get_model

    from llava_star.lmms.model import LlavaStar

    (ep,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "llava_star"]
    assert ep.value == "llava_star.lmms:manifest"
    assert get_model("llava_star") is LlavaStar
    assert version("transformers") == "4.37.2" and version("lmms_eval") == "0.7.3"
    assert version("huggingface_hub").split(".")[0] == "0"


def _instances(kind, rows, task="t"):
    """lmms-eval Instances as its tasks build them: rows of (context, gen_kwargs or continuation, doc_id)."""
    from lmms_eval.api.instance import Instance

    def visual(doc):
        return doc["visuals"]

    return [Instance(request_type=kind, arguments=(ctx, arg, visual, doc_id, task, "test"), idx=i,
                     metadata={"task": task, "doc_id": doc_id, "repeats": 1})
            for i, (ctx, arg, doc_id) in enumerate(rows)]


@pytest.fixture(scope="module")
def star_lm(tiny15):
    from llava_star.lmms.model import LlavaStar

    return LlavaStar(pretrained=tiny15, method="star", budget=58, batch_size=2)


def test_requests_the_runners_never_see(star_lm, images):
    """A context that places llava's image token itself, a text-only doc, lmms-eval's
    unconditional (acc_mutual_info) requests, and docs llava-star refuses, named."""
    photo = images["chelsea"]
    star_lm.task_dict = {"t": {"test": [{"visuals": [photo]}, {"visuals": []}, {"visuals": [photo, photo]},
                                        {"visuals": ["clip.mp4"]}]}}
    gen = {"max_new_tokens": 3, "temperature": 0}
    out = star_lm.generate_until(_instances("generate_until", [("Is it a cat?", gen, 0),
                                                               ("<image>\nIs it a cat?", gen, 0),
                                                               ("Say hello.", gen, 1)]))
    assert out[0].text == out[1].text and out[0].token_counts.to_dict() == out[1].token_counts.to_dict()
    assert out[2].token_counts.llava_star["visual_tokens"] == 0  # text only: nothing to prune
    from lmms_eval.api.instance import Instance

    unconditional = Instance(request_type="loglikelihood", arguments=("", "yes"), idx=0,
                             metadata={"task": "t", "doc_id": 0, "repeats": 1})
    scored = star_lm.loglikelihood(_instances("loglikelihood", [("Is it a cat?", " yes", 0)]) + [unconditional])
    assert all(isinstance(r.text[0], float) and r.text[0] > 0 for r in scored)
    for doc_id, says in ((2, "task t doc 2 has 2 images"), (3, "task t doc 3 gives a str, not an image")):
        with pytest.raises(ValueError, match=says):
            star_lm.generate_until(_instances("generate_until", [("Is it a cat?", gen, doc_id)]))


def test_prompt_too_long_is_named_in_a_batch(star_lm, images):
    star_lm.task_dict = {"t": {"test": [{"visuals": [images["rocket"]]}, {"visuals": [images["coffee"]]}]}}
    long = "Describe it. " * 700  # past the tiny model's 2048-token context with its image
    gen = {"max_new_tokens": 2, "temperature": 0}
    with pytest.raises(ValueError, match=r"task t doc 1: .*tokenizer_model_max_length"):
        star_lm.generate_until(_instances("generate_until", [("What is it?", gen, 0), (long, gen, 1)]))
    with pytest.raises(ValueError, match=r"task t doc 1: .*tokenizer_model_max_length"):
        star_lm.loglikelihood(_instances("loglikelihood", [("What is it?", " a", 0), (long, " b", 1)]))


def test_llava_next_anyres_batch_equals_single(tiny_dir, images):
    """LLaVA-NeXT (anyres crops, fixed_grid, per-crop budgets) through the same paths."""
    from llava_star.lmms.model import LlavaStar

    lm = LlavaStar(pretrained=tiny_dir("llava-next"), method="star", budget=58, budget_unit="crop",
                   fixed_grid=672, batch_size=2)
    lm.task_dict = {"t": {"test": [{"visuals": [images["rocket"]]}, {"visuals": [images["coffee"]]}]}}
    gen = {"max_new_tokens": 2, "temperature": 0}
    rows = [("What is it?", gen, 0), ("Describe the colours you can see, briefly.", gen, 1)]
    mc = [("What is it?", " a rocket", 0), ("What is it?", " a cup", 0), ("Which colour?", " red", 1)]
    batched = (lm.generate_until(_instances("generate_until", rows)), lm.loglikelihood(_instances("loglikelihood", mc)))
    lm.args.batch_size = 1
    single = (lm.generate_until(_instances("generate_until", rows)), lm.loglikelihood(_instances("loglikelihood", mc)))
    assert [r.text for r in batched[0]] == [r.text for r in single[0]]
    assert [r.text[0] for r in batched[1]] == pytest.approx([r.text[0] for r in single[1]], **LOSS_TOL)
    records = [r.token_counts.llava_star for r in batched[0] + batched[1]]
    assert records == [r.token_counts.llava_star for r in single[0] + single[1]]
    assert all(r["visual_tokens"] == 5 * 576 and r["final_kept"] == 5 * 58 for r in records)  # 2x2 crops + base
