"""Shared code of the eval runners (`model_vqa_loader`, `model_vqa_science`, `model_vqa`).

Each runner keeps llava's command line (same flag spellings and defaults), prompts, image
processing and answers-file format (`question_id, prompt, text, answer_id, model_id,
metadata`, one line per question, in question order), so llava's own scorers and ours read
the files unchanged. On top of llava's runners:

- pruning: the method flags of `llava_star.cli` (`--method star --budget 58 ...`); `metadata`
  holds what pruning did on the question (see `metadata_for`);
- `--device`, `--batch-size` (left padding), `--attn-implementation`, `--fixed-grid`;
- never losing work: answers are appended and flushed one question at a time, a re-run skips
  the questions already answered (`--resume`, the default), a truncated last line left by a
  crash is dropped with a warning, the finished file is rewritten in question order if it is
  not already; `--no-resume` writes to `<answers>.tmp` and renames it at the end, so the old
  file is never half overwritten;
- checking the inputs before the model loads: question-file format, duplicate ids, chunking,
  image files that do not exist (`--skip-bad-images` records such questions in
  `<answers>.skipped.jsonl` instead of stopping);
- a tqdm progress bar with ETA.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .inputs import InputError, read_json, read_jsonl, require_keys

SCIENCE_SINGLE_PRED = "Answer with the option's letter from the given choices directly."


EvalInputError = InputError  # the name the runners use


# ----------------------------------------------------------------------------- command line

def _device_default() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # pragma: no cover - torch always importable here
        return "cpu"


def build_parser(prog: str, description: str, *, question_file: str, conv_mode: str,
                 max_new_tokens: int, sampling_flags: bool, science: bool = False,
                 num_workers: int = 4) -> argparse.ArgumentParser:
    """llava's flags for one runner (same spelling and defaults), then ours."""
    from llava_star.cli import add_method_args, add_model_args

    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("llava's flags (same spelling and defaults as llava.eval)")
    g.add_argument("--model-path", type=str, default="facebook/opt-350m")
    g.add_argument("--model-base", type=str, default=None)
    g.add_argument("--image-folder", type=str, default="")
    g.add_argument("--question-file", type=str, default=question_file)
    g.add_argument("--answers-file", type=str, default="answer.jsonl")
    g.add_argument("--conv-mode", type=str, default=conv_mode)
    g.add_argument("--num-chunks", type=int, default=1)
    g.add_argument("--chunk-idx", type=int, default=0)
    g.add_argument("--temperature", type=float, default=0.2)
    if sampling_flags:
        g.add_argument("--top_p", type=float, default=None)
        g.add_argument("--num_beams", type=int, default=1)
    if science:
        g.add_argument("--answer-prompter", action="store_true",
                       help="accepted for compatibility; like llava 1.2.2's model_vqa_science it has no effect")
        g.add_argument("--single-pred-prompt", action="store_true",
                       help=f"append \"{SCIENCE_SINGLE_PRED}\" to every question")
    g.add_argument("--max_new_tokens", type=int, default=max_new_tokens,
                   help=f"tokens generated at most (default {max_new_tokens}, llava's value)")

    o = p.add_argument_group("llava-star")
    o.add_argument("--device", default=_device_default(),
                   help="cuda (fp16, llava's builder) or cpu (fp32); default: cuda if available")
    o.add_argument("--batch-size", type=int, default=1,
                   help="questions per generate call; >1 pads prompts on the left (default 1, llava's)")
    o.add_argument("--num-workers", type=int, default=num_workers,
                   help=f"threads that load and preprocess images ahead of the model (default {num_workers})")
    o.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip questions already in --answers-file (default); --no-resume starts over, "
                        "writing <answers>.tmp and renaming it at the end")
    o.add_argument("--skip-bad-images", action="store_true",
                   help="record questions whose image is missing or unreadable in "
                        "<answers>.skipped.jsonl instead of stopping")
    o.add_argument("--allow-duplicate-ids", action="store_true",
                   help="allow a question_id to repeat with a different question text, as in "
                        "LLaVA's MME and TextVQA files (answers are then matched on id and text)")
    add_model_args(o)
    add_method_args(p)
    return p


def check_conv_mode(conv_mode: str) -> None:
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise EvalInputError(f"--conv-mode {conv_mode!r} is not one of llava's templates: "
                             f"{', '.join(sorted(conv_templates))}")


def method_config(args):
    """The MethodConfig for the loader: None for --method none (stock llava)."""
    from llava_star.cli import method_from_args

    cfg = method_from_args(args)
    return None if cfg.name == "none" else cfg


def check_args(args) -> None:
    if args.num_chunks < 1:
        raise EvalInputError(f"--num-chunks must be at least 1, got {args.num_chunks}")
    if not 0 <= args.chunk_idx < args.num_chunks:
        raise EvalInputError(f"--chunk-idx must be in 0..{args.num_chunks - 1} (--num-chunks {args.num_chunks}), "
                             f"got {args.chunk_idx}")
    if args.batch_size < 1:
        raise EvalInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_workers < 0:
        raise EvalInputError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.max_new_tokens < 1:
        raise EvalInputError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    if getattr(args, "num_beams", 1) < 1:
        raise EvalInputError(f"--num_beams must be at least 1, got {args.num_beams}")
    check_conv_mode(args.conv_mode)
    if str(args.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EvalInputError(f"--device {args.device}: CUDA is not available here (use --device cpu)")
    try:
        args.method_config = method_config(args)
    except SystemExit as e:  # method_from_args: "error: ..."
        msg = str(e.code)
        raise EvalInputError(msg[len("error: "):] if msg.startswith("error: ") else msg) from None


# ----------------------------------------------------------------------------- questions

@dataclass
class Item:
    """One question, as the runner will ask it."""
    qid: Any                 # question_id written to the answers file
    prompt: str              # the answers file's "prompt" (llava's cur_prompt)
    query: str               # the user turn without the image token
    image: Optional[str]     # path relative to --image-folder, or None (text-only)
    line: int                # where it sits in the question file (1-based line or list index)
    convert_rgb: bool = True

    @property
    def key(self) -> Tuple[str, str]:
        return answer_key(self.qid, self.prompt)


def answer_key(qid: Any, prompt: str) -> Tuple[str, str]:
    """What identifies an answer: the question id (with its JSON type) and the prompt."""
    return json.dumps(qid, sort_keys=True), prompt


def read_jsonl_questions(path: str, required: Sequence[str]) -> List[Tuple[int, Dict[str, Any]]]:
    """(line number, object) for every non-blank line; refuses anything else."""
    path = os.path.expanduser(path)
    records = read_jsonl(path, "--question-file")
    require_keys(records, required, path, "--question-file")
    if not records:
        raise EvalInputError(f"--question-file {path} has no questions (empty file)")
    return [(r.pop("__line__"), r) for r in records]


def read_json_questions(path: str) -> List[Any]:
    path = os.path.expanduser(path)
    data = read_json(path, "--question-file")
    if not isinstance(data, list):
        raise EvalInputError(f"--question-file {path}: expected a JSON list of questions")
    if not data:
        raise EvalInputError(f"--question-file {path} has no questions (empty list)")
    return data


def check_unique(items: Sequence[Item], path: str, allow_duplicate_ids: bool) -> None:
    """Duplicate ids are refused (an answer could not be told apart); with
    --allow-duplicate-ids an id may repeat with a different question text, never with the same."""
    seen_key: Dict[Tuple[str, str], Item] = {}
    seen_id: Dict[str, Item] = {}
    for it in items:
        k = it.key
        if k in seen_key:
            raise EvalInputError(
                f"--question-file {path}: question {it.qid!r} appears twice with the same text "
                f"(entries {seen_key[k].line} and {it.line})")
        seen_key[k] = it
        if not allow_duplicate_ids and k[0] in seen_id:
            first = seen_id[k[0]]
            raise EvalInputError(
                f"--question-file {path}: duplicate question_id {it.qid!r} (entries {first.line} and "
                f"{it.line}). LLaVA's MME and TextVQA files repeat ids with different questions: pass "
                f"--allow-duplicate-ids for those (answers are then matched on id and question text)")
        seen_id.setdefault(k[0], it)


def split_list(lst: Sequence[Any], n: int) -> List[Sequence[Any]]:
    """llava's chunking: chunks of ceil(len / n), so there can be fewer than n of them."""
    size = math.ceil(len(lst) / n)
    return [lst[i:i + size] for i in range(0, len(lst), size)]


def get_chunk(items: Sequence[Item], n: int, k: int, path: str) -> List[Item]:
    if n > len(items):
        raise EvalInputError(f"--num-chunks {n} is more than the {len(items)} questions in {path}; "
                             f"use at most {len(items)} chunks (GPUs)")
    chunks = split_list(items, n)
    if k >= len(chunks):
        # llava's ceil split leaves the last chunk(s) empty for some sizes (e.g. 5 questions
        # in 4 chunks of 2); llava would crash, we write an empty answers file.
        warnings.warn(f"chunk {k} of {n} is empty ({len(items)} questions split in chunks of "
                      f"{math.ceil(len(items) / n)}, as llava splits them)")
        return []
    return list(chunks[k])


def check_images(items: Sequence[Item], folder: str) -> List[Tuple[Item, str]]:
    """(item, reason) for every image file that does not exist. A cheap stat per image."""
    bad = []
    for it in items:
        if it.image is None:
            continue
        path = os.path.join(folder, it.image)
        if not os.path.isfile(path):
            bad.append((it, f"image file not found: {path}"))
    return bad


# ----------------------------------------------------------------------------- answers file

def skipped_path(answers_file: str) -> str:
    base = answers_file[:-len(".jsonl")] if answers_file.endswith(".jsonl") else answers_file
    return base + ".skipped.jsonl"


def read_existing_answers(path: str) -> Tuple[Dict[Tuple[str, str], str], bool]:
    """Answers already in `path`: key -> the JSON line (no newline), and whether the file needs
    rewriting before appending (a truncated last line dropped, or a missing final newline,
    or a repeated answer)."""
    with open(path, "rb") as f:
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    ends_clean = lines[-1] == ""
    if ends_clean:
        lines = lines[:-1]
    dirty = not ends_clean
    done: Dict[Tuple[str, str], str] = {}
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            dirty = True
            continue
        last = i == len(lines)
        try:
            obj = json.loads(line)
            ok = isinstance(obj, dict) and "question_id" in obj and isinstance(obj.get("text"), str) \
                and isinstance(obj.get("prompt"), str)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            # Our writer emits each line and its newline in one write, so only an
            # unterminated last line can be an interrupted append; anything else is not ours.
            if last and not ends_clean:
                warnings.warn(f"{path}: line {i} is incomplete (an interrupted run?); dropping it "
                              f"and answering that question again")
                dirty = True
                continue
            raise EvalInputError(f"--answers-file {path}, line {i}: not a complete answer line; the file is "
                                 f"damaged (fix or remove it, or use --no-resume to start over)")
        k = answer_key(obj["question_id"], obj["prompt"])
        if k in done:
            warnings.warn(f"{path}: line {i} answers question {obj['question_id']!r} again; keeping the first")
            dirty = True
            continue
        done[k] = json.dumps(obj)
    return done, dirty


def _atomic_write(path: str, lines: Iterable[str]) -> None:
    tmp = path + ".rewrite.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AnswerWriter:
    """Appends answer lines, flushed one by one; see the module docstring for the guarantees."""

    def __init__(self, path: str, items: Sequence[Item], resume: bool):
        self.path = path
        self.order = [it.key for it in items]
        wanted = set(self.order)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.done: Dict[Tuple[str, str], str] = {}
        self.written_order: List[Tuple[str, str]] = []
        if os.path.isdir(path):
            raise EvalInputError(f"--answers-file {path} is a directory")
        if resume and os.path.exists(path):
            done, dirty = read_existing_answers(path)
            extra = [k for k in done if k not in wanted]
            if extra:
                shown = ", ".join(f"{json.loads(q)!r}" for q, _ in extra[:3])
                raise EvalInputError(
                    f"--answers-file {path} holds {len(extra)} answer(s) to questions that are not in this "
                    f"chunk of --question-file (e.g. {shown}): a different question file or --num-chunks? "
                    f"Use another --answers-file, or --no-resume to start over")
            self.done = done
            self.written_order = list(done)
            if dirty:
                _atomic_write(path, done.values())
            self.target = path
            self.mode = "a"
        else:
            # Never half-overwrite an old file (--no-resume): write next to it, rename at the end.
            self.target = path + ".tmp" if os.path.exists(path) else path
            self.mode = "w"
        # Opened at the first answer, so a run that stops before answering anything (bad
        # flag, model that does not load, ...) leaves no empty answers file behind.
        self.file = None

    def _open(self) -> None:
        if self.file is None:
            self.file = open(self.target, self.mode, encoding="utf-8")

    def write(self, record: Dict[str, Any]) -> None:
        key = answer_key(record["question_id"], record["prompt"])
        if key in self.done:  # cannot happen: pending questions exclude answered ones
            raise RuntimeError(f"question {record['question_id']!r} answered twice")
        self._open()
        line = json.dumps(record)
        self.file.write(line + "\n")
        self.file.flush()
        self.done[key] = line
        self.written_order.append(key)

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.flush()
            self.file.close()

    def finish(self) -> int:
        """Close, put the lines in question order (rewriting only if needed), move into place."""
        self._open()  # a chunk with nothing to answer still gets its (possibly empty) file
        self.close()
        ordered = [k for k in self.order if k in self.done]
        if ordered != self.written_order:
            _atomic_write(self.target, (self.done[k] for k in ordered))
        else:
            with open(self.target, "rb+") as f:
                os.fsync(f.fileno())
        if self.target != self.path:
            os.replace(self.target, self.path)
        return len(ordered)


class SkipLog:
    """`<answers>.skipped.jsonl`: one line per question skipped for a bad image."""

    def __init__(self, answers_file: str):
        self.path = skipped_path(answers_file)
        self.count = 0
        self.file = None
        if os.path.exists(self.path):
            os.remove(self.path)  # those questions are unanswered, so they are retried now

    def add(self, item: Item, reason: str) -> None:
        if self.file is None:
            self.file = open(self.path, "w", encoding="utf-8")
        self.file.write(json.dumps({"question_id": item.qid, "prompt": item.prompt, "image": item.image,
                                    "error": reason}) + "\n")
        self.file.flush()
        self.count += 1

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# ----------------------------------------------------------------------------- model side

def load_model(args, model_name: str):
    from llava_star.loader import load_pretrained_model

    try:
        tokenizer, model, processor, _ = load_pretrained_model(
            os.path.expanduser(args.model_path), args.model_base, model_name, star=args.method_config,
            device=args.device, attn_implementation=args.attn_implementation,
            fixed_grid=args.fixed_grid)
    except (FileNotFoundError, ValueError) as e:
        raise EvalInputError(str(e)) from None
    except OSError as e:  # transformers: not a checkpoint directory, hub id unreachable, ...
        which = f"--model-path {args.model_path}" + (f" / --model-base {args.model_base}" if args.model_base else "")
        raise EvalInputError(f"cannot load the model ({which}): {e}") from None
    if getattr(model, "star_plan", None) is None:
        count_visual_tokens(model)
    return tokenizer, model, processor


def count_visual_tokens(model) -> None:
    """Stock llava (--method none): note, per sample, the image's patch tokens and its whole
    span in the merged sequence, so the answers file records the unpruned counts the way a
    pruned run's record does (on LLaVA-NeXT the span also holds `image_newline` rows, which
    count in t_eq but are not patches). Wraps the instance's
    `prepare_inputs_labels_for_multimodal` (llava's merge); what it computes is unchanged."""
    from llava_star.hosts.llava.merge import image_spans, merged_layout

    original = model.prepare_inputs_labels_for_multimodal

    def prepare(input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None):
        out = original(input_ids, position_ids, attention_mask, past_key_values, labels, images,
                       image_sizes=image_sizes)
        if images is not None and out[4] is not None and input_ids.shape[1] != 1:
            spans = image_spans(input_ids, attention_mask, out[2], out[4].shape[1])
            lengths = [0 if s is None else int(s[1]) for s in spans]
            patches = lengths
            if isinstance(images, list) or images.ndim == 5:  # anyres: leave the newline rows out
                # llava's own merge, run once more on marker features (no CLIP): the same layout
                # the pruning engine reads
                layouts = merged_layout(model, input_ids, attention_mask, images, image_sizes)
                patches = [0 if l is None else int((l >= 0).sum()) for l in layouts]
            model._eval_visual_tokens = list(zip(patches, lengths))
        return out

    model.prepare_inputs_labels_for_multimodal = prepare
    model._eval_visual_tokens = None


def metadata_for(model, args, batch_size: int) -> List[Dict[str, Any]]:
    """Per sample of the last generate call: {method, budget, visual_tokens, stage1_kept,
    final_kept, t_eq}. visual_tokens is the image's token count before pruning, final_kept
    what survived the last stage, t_eq the layer-averaged count. For --method none (stock
    llava) every count is the unpruned one; a text-only question has 0 everywhere."""
    base = {"method": args.method}
    if args.budget is not None:
        base["budget"] = args.budget
    records = getattr(model, "star_record", None)
    if getattr(model, "star_plan", None) is not None and records is not None and len(records) == batch_size:
        return [{**base, **r.summary()} for r in records]
    counts = getattr(model, "_eval_visual_tokens", None)
    if counts is None or len(counts) != batch_size:
        counts = [(0, 0)] * batch_size
    return [{**base, "visual_tokens": n, "stage1_kept": n, "final_kept": n, "t_eq": float(span)}
            for n, span in counts]


def build_prompt(item: Item, conv_mode: str, model_config) -> str:
    from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates

    qs = item.query
    if item.image is not None:
        if getattr(model_config, "mm_use_im_start_end", False):
            qs = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN + "\n" + qs
        else:
            qs = DEFAULT_IMAGE_TOKEN + "\n" + qs
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], qs)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


@dataclass
class Prepared:
    item: Item
    pixels: Any = None          # the image's tensor from llava's process_images (no batch dim)
    size: Any = None            # PIL (width, height)
    error: Optional[str] = None


def prepare_item(item: Item, folder: str, processor, model_config) -> Prepared:
    """Open and preprocess one image exactly as llava's runner does; errors name the file."""
    if item.image is None:
        return Prepared(item)
    from llava.mm_utils import process_images
    from PIL import Image

    path = os.path.join(folder, item.image)
    try:
        image = Image.open(path)
        if item.convert_rgb:
            image = image.convert("RGB")
        pixels = process_images([image], processor, model_config)[0]
        return Prepared(item, pixels, image.size)
    except FileNotFoundError:
        return Prepared(item, error=f"image file not found: {path}")
    except Exception as e:  # unreadable / truncated / not an image
        return Prepared(item, error=f"cannot read image {path}: {type(e).__name__}: {e}")


def generate_batch(model, tokenizer, prepared: Sequence[Prepared], args, gen_kwargs: Dict[str, Any]) -> List[str]:
    """One generate call for questions that all have an image or all have none."""
    import torch
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token

    ids = [tokenizer_image_token(build_prompt(p.item, args.conv_mode, model.config), tokenizer,
                                 IMAGE_TOKEN_INDEX, return_tensors="pt") for p in prepared]
    device = model.device
    kwargs = dict(gen_kwargs)
    if len(ids) == 1:
        input_ids, attention_mask = ids[0].unsqueeze(0), None  # llava's exact call
    else:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        n = max(x.numel() for x in ids)
        input_ids = torch.full((len(ids), n), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, n - x.numel():] = x
            attention_mask[i, n - x.numel():] = 1
        attention_mask = attention_mask.to(device)
        kwargs["pad_token_id"] = pad
    input_ids = input_ids.to(device)
    if prepared[0].item.image is not None:
        tensors = [p.pixels for p in prepared]
        if all(t.shape == tensors[0].shape for t in tensors):
            images = torch.stack(tensors).to(device=device, dtype=model.dtype)
        else:  # anyres crops of different counts: llava takes a list
            images = [t.to(device=device, dtype=model.dtype) for t in tensors]
        image_sizes = [p.size for p in prepared]
    else:
        images, image_sizes = None, None
    if hasattr(model, "_eval_visual_tokens"):
        model._eval_visual_tokens = None  # set again by this call's merge, if it has images
    with torch.inference_mode(), warnings.catch_warnings():
        # llava passes temperature/top_p even when greedy; transformers warns on every call.
        warnings.filterwarnings("ignore", message=r"`do_sample` is set to `False`")
        output_ids = model.generate(input_ids, images=images, image_sizes=image_sizes,
                                    attention_mask=attention_mask, **kwargs)
    return [t.strip() for t in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def _batches(items: Sequence[Item], size: int) -> List[List[Item]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def _prefetch(batches, load: Callable[[List[Item]], List[Prepared]], workers: int):
    """Yield load(batch) for each batch, up to `workers` batches ahead in threads."""
    if workers <= 0:
        for b in batches:
            yield load(b)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        it = iter(batches)
        for b in it:
            pending.append(pool.submit(load, b))
            if len(pending) > workers:
                break
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield fut.result()


# ----------------------------------------------------------------------------- the loop

def run(args, items: List[Item], question_path: str, gen_kwargs: Callable[[Any], Dict[str, Any]],
        prog: str, adjust_conv_mode: Optional[Callable[[Any, str], None]] = None) -> int:
    """Validate, then answer every pending question of this chunk. Returns the exit status."""
    from llava.mm_utils import get_model_name_from_path

    check_args(args)
    check_unique(items, question_path, args.allow_duplicate_ids)
    chunk = get_chunk(items, args.num_chunks, args.chunk_idx, question_path)
    answers_file = os.path.expanduser(args.answers_file)
    folder = os.path.expanduser(args.image_folder)
    if any(it.image is not None for it in chunk) and not os.path.isdir(folder or "."):
        raise EvalInputError(f"--image-folder {args.image_folder}: no such directory")

    writer = AnswerWriter(answers_file, chunk, args.resume)
    skips = SkipLog(answers_file)
    try:
        pending = [it for it in chunk if it.key not in writer.done]
        bad = check_images(pending, folder)
        if bad and not args.skip_bad_images:
            shown = "\n  ".join(reason for _, reason in bad[:5])
            more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise EvalInputError(f"{len(bad)} of {len(pending)} questions to answer have no image file:\n  "
                                 f"{shown}{more}\n(check --image-folder, or pass --skip-bad-images to record "
                                 f"them in {skipped_path(answers_file)} and go on)")
        for it, reason in bad:
            skips.add(it, reason)
        bad_keys = {it.key for it, _ in bad}
        pending = [it for it in pending if it.key not in bad_keys]

        model_name = get_model_name_from_path(os.path.expanduser(args.model_path))
        if adjust_conv_mode is not None:
            adjust_conv_mode(args, model_name)
            check_conv_mode(args.conv_mode)
        before = len(chunk) - len(pending) - len(bad)
        print(f"{prog}: chunk {args.chunk_idx + 1}/{args.num_chunks} of {question_path}: {len(chunk)} questions, "
              f"{before} already answered, {len(pending)} to go -> {answers_file}", file=sys.stderr, flush=True)
        if pending:
            _answer(args, pending, folder, model_name, writer, skips, gen_kwargs, prog,
                    total=len(chunk), initial=len(chunk) - len(pending))
        n = writer.finish()
    finally:
        writer.close()
        skips.close()
    if skips.count:
        print(f"{prog}: warning: {skips.count} question(s) skipped for a bad image, listed in {skips.path}",
              file=sys.stderr)
    print(f"{prog}: {n} answers in {answers_file}", file=sys.stderr, flush=True)
    return 0


def _answer(args, pending, folder, model_name, writer, skips, gen_kwargs, prog, *, total, initial):
    import shortuuid
    from tqdm import tqdm

    tokenizer, model, processor = load_model(args, model_name)
    if args.batch_size > 1:
        model.config.tokenizer_padding_side = "left"
    kwargs = gen_kwargs(args)

    def load(batch):
        return [prepare_item(it, folder, processor, model.config) for it in batch]

    bar = tqdm(total=total, initial=initial, desc=prog.split(".")[-1], unit="q", dynamic_ncols=True)
    try:
        for prepared in _prefetch(_batches(pending, args.batch_size), load, args.num_workers):
            good = []
            for p in prepared:
                if p.error is None:
                    good.append(p)
                elif args.skip_bad_images:
                    skips.add(p.item, p.error)
                else:
                    raise EvalInputError(f"{p.error} (question {p.item.qid!r}; pass --skip-bad-images to "
                                         f"record it in {skips.path} and go on)")
            # llava cannot mix image and text-only samples in one call: split, keep order.
            groups = [[p for p in good if p.item.image is not None], [p for p in good if p.item.image is None]]
            results = {}
            for group in groups:
                if not group:
                    continue
                texts = generate_batch(model, tokenizer, group, args, kwargs)
                metas = metadata_for(model, args, len(group))
                for p, text, meta in zip(group, texts, metas):
                    results[id(p)] = (text, meta)
            for p in good:
                text, meta = results[id(p)]
                writer.write({"question_id": p.item.qid, "prompt": p.item.prompt, "text": text,
                              "answer_id": shortuuid.uuid(), "model_id": model_name, "metadata": meta})
            bar.update(len(prepared))
    finally:
        bar.close()


def main_wrapper(prog: str, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except EvalInputError as e:
        sys.stdout.flush()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
