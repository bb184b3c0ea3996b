"""The run loop shared by the runners: check everything that can be checked before the model
loads (flags, questions, images, the answers file's folder, lock and settings), then answer
the pending questions of this chunk with a progress bar, writing each answer as it comes."""
from __future__ import annotations

import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import generation, run_settings
from .answers_file import AnswerWriter, SkipLog, limited_path
from .command_line import check_args, check_conv_mode, choose_host, require_environment
from .generation import PromptTooLong, Prepared
from .inputs import InputError
from .questions import Item, check_images, check_unique, first_questions, get_chunk


BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # shortuuid's alphabet


class Interrupted(Exception):
    """Ctrl-C: the answers written so far are kept."""


def run(args, items: List[Item], question_path: str, gen_kwargs: Callable[[Any], Dict[str, Any]],
        prog: str, adjust_conv_mode: Optional[Callable[[Any, str], None]] = None) -> int:
    """Validate, then answer every pending question of this chunk. Returns the exit status."""
    args.host = choose_host(args)
    if args.host == "llava":
        require_environment("llava")
        from llava.mm_utils import get_model_name_from_path

        check_args(args)
    else:
        from llava_star.prompting import model_name_for as get_model_name_from_path

        model_side(args.host).check_args(args)
    check_unique(items, question_path, args.allow_duplicate_ids)
    chunk = get_chunk(first_questions(items, args.limit), args.num_chunks, args.chunk_idx, question_path)
    answers_file = limited_path(os.path.expanduser(args.answers_file), args.limit)
    folder = os.path.expanduser(args.image_folder)
    if any(it.image is not None for it in chunk) and not os.path.isdir(folder or "."):
        raise InputError(f"--image-folder {args.image_folder}: no such directory")
    model_name = get_model_name_from_path(os.path.expanduser(args.model_path))
    if adjust_conv_mode is not None and args.host == "llava":  # llava's template switch; hf: the chat template
        adjust_conv_mode(args, model_name)
        check_conv_mode(args.conv_mode)
    settings = run_settings.build(args, model_name, os.path.expanduser(question_path))

    writer = AnswerWriter(answers_file, chunk, args.resume, settings)
    skips = SkipLog(answers_file)
    try:
        pending = _without_bad_images(args, [it for it in chunk if it.key not in writer.done], folder, skips)
        before = len(chunk) - len(pending) - skips.count
        print(f"{prog}: chunk {args.chunk_idx + 1}/{args.num_chunks} of {question_path}: {len(chunk)} questions, "
              f"{before} already answered, {len(pending)} to go -> {answers_file}", file=sys.stderr, flush=True)
        if pending:
            _answer(args, pending, folder, model_name, writer, skips, gen_kwargs, prog, total=len(chunk))
        n = writer.finish()
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the {len(writer.done)} answers so far are kept in {writer.target}: "
                          f"run the same command again to resume") from None
    finally:
        writer.release()
        skips.close()
    if skips.count:
        print(f"{prog}: warning: {skips.count} question(s) skipped, listed in {skips.path}", file=sys.stderr)
    print(f"{prog}: {n} answers in {answers_file}", file=sys.stderr, flush=True)
    return 0


def _without_bad_images(args, pending: List[Item], folder: str, skips: SkipLog) -> List[Item]:
    """Questions whose image file is missing: an error naming them, or (--skip-bad-images)
    recorded in the skip log and left out."""
    bad = check_images(pending, folder)
    if bad and not args.skip_bad_images:
        shown = "\n  ".join(reason for _, reason in bad[:5])
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(f"{len(bad)} of {len(pending)} questions to answer have no image file:\n  "
                         f"{shown}{more}\n(check --image-folder, or pass --skip-bad-images to record "
                         f"them in {skips.path} and go on)")
    for it, reason in bad:
        skips.add(it, reason)
    bad_keys = {it.key for it, _ in bad}
    return [it for it in pending if it.key not in bad_keys]


def _answer(args, pending, folder, model_name, writer, skips, gen_kwargs, prog, *, total):
    from tqdm import tqdm

    side = model_side(args.host)
    tokenizer, model, processor = side.load_model(args, model_name)
    if args.batch_size > 1:
        model.config.tokenizer_padding_side = "left"
    kwargs = gen_kwargs(args)

    def load(batch):
        return [side.prepare_item(it, folder, processor, model.config) for it in batch]

    note = generation.BudgetNote(args, prog)
    bar = tqdm(total=total, initial=total - len(pending), desc=prog.split(".")[-1], unit="q", dynamic_ncols=True)
    try:
        for prepared in _prefetch(_batches(pending, args.batch_size), load, args.num_workers):
            _answer_batch(args, side, prepared, model, tokenizer, kwargs, model_name, writer, skips, note)
            bar.update(len(prepared))
    finally:
        bar.close()


def _skip_or_stop(args, skips: SkipLog, item: Item, reason: str) -> None:
    if not args.skip_bad_images:
        raise InputError(f"{reason} (question {item.qid!r}; pass --skip-bad-images to record it in "
                         f"{skips.path} and go on)")
    skips.add(item, reason)


def model_side(host: str):
    """The module that loads and runs the model: `generation` (llava) or `hf_side` (transformers 5),
    imported only for its host."""
    if host == "llava":
        return generation
    from . import hf_side

    return hf_side


def _answer_batch(args, side, prepared: List[Prepared], model, tokenizer, kwargs, model_name, writer, skips,
                  note: "generation.BudgetNote") -> None:
    good = []
    for p in prepared:
        if p.error is None:
            good.append(p)
        else:
            _skip_or_stop(args, skips, p.item, p.error)
    # llava cannot mix image and text-only samples in one call: split, keep order.
    results = {}
    for group in ([p for p in good if p.item.image is not None], [p for p in good if p.item.image is None]):
        if group:
            results.update(zip(map(id, group), side.answer_group(model, tokenizer, group, args, kwargs)))
            note.check(model, group)
    for p in good:
        result = results[id(p)]
        if isinstance(result, PromptTooLong):
            _skip_or_stop(args, skips, p.item, str(result))
            continue
        text, meta = result
        writer.write({"question_id": p.item.qid, "prompt": p.item.prompt, "text": text,
                      "answer_id": answer_id(), "model_id": model_name, "metadata": meta})


def answer_id() -> str:
    """llava's answer_id, shortuuid.uuid(). shortuuid comes with llava-torch, so without it (the
    hf host's .venv-hf) the same kind of id, 22 base-57 digits of a uuid4, is made here."""
    try:
        import shortuuid
    except ImportError:
        n, digits = uuid.uuid4().int, []
        for _ in range(22):
            n, d = divmod(n, len(BASE57))
            digits.append(BASE57[d])
        return "".join(reversed(digits))
    return shortuuid.uuid()


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


def main_wrapper(prog: str, fn: Callable[[], int]) -> int:
    """Run `fn`; a bad input is one line on stderr (exit 2), Ctrl-C one line (exit 130)."""
    try:
        return fn()
    except InputError as e:
        sys.stdout.flush()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        sys.stdout.flush()
        print(f"{prog}: {e or 'interrupted before any answer was written'}", file=sys.stderr)
        return 130
