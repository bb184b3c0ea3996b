"""`--model llava_star` for lmms-eval (0.7.3): llava's checkpoints with any pruning method.

- `generate_until`: the eval runners' prompts (llava_star.prompting), their left padding
  (llava_star.eval.generation) and greedy settings, so a batch answers as each question
  alone and the answers equal `llava_star.eval.model_vqa_loader`'s. As lmms-eval's own
  `llava` model, `until` is not applied (an answer ends at EOS or max_new_tokens, default
  1024) and sampling follows `temperature > 0`.
- `loglikelihood` (multiple-choice tasks): the context (image and question, up to the
  assistant's turn) is prefilled once, pruning included, and every continuation of that
  context is scored over the pruned cache; no `labels`. Like lmms-eval's `llava` it returns
  the mean negative log-likelihood of the continuation tokens (the answer closed by the
  template's end of turn), which lmms-eval's multiple_choice ranks with argmin. Each pair
  goes back wrapped in a GenerationResult: lmms-eval 0.7.3 turns any other non-string
  result into its str() (`unwrap_generation_output`), which its multiple_choice cannot read.
- Every request's pruning record (method, budget, visual_tokens, stage1_kept, final_kept,
  t_eq, tokens_per_layer, kept grid indices) goes where `--log_samples` writes what a model
  says about one request, its `token_counts` (lmms-eval's per-request usage, the one such
  field its samples file keeps): `"token_counts": [{"llava_star": {...}}]`, one per request.
- Data parallel (`accelerate launch`): each process loads the model on its own device and
  answers its share of the requests; lmms-eval merges the results.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from llava_star.eval.generation import CONTEXT_ERROR, Prepared, eight_bit, image_batch, padded_batch
from llava_star.eval.questions import Item
from llava_star.prompting import build_prompt, conv_mode_for

from . import model_args as margs

RECORD_KEY = "llava_star"
DEFAULT_MAX_NEW_TOKENS = 1024  # lmms-eval's llava model's default, for tasks that set none


def _fail(message: str):
    """A bad --model_args or checkpoint: one line, no traceback (lmms-eval catches Exception,
    prints its traceback and carries on, so this is a SystemExit)."""
    raise SystemExit(f"llava_star: error: {message}")


@dataclass
class PruneUsage(TokenCounts):
    """lmms-eval's per-request usage record, carrying the request's pruning record into the
    samples file."""
    llava_star: Optional[dict] = None

    def to_dict(self) -> Dict[str, Any]:
        return {**super().to_dict(), RECORD_KEY: self.llava_star}


def _result(value, record: dict) -> GenerationResult:
    return GenerationResult(text=value, token_counts=PruneUsage(llava_star=record))


@dataclass
class _Question:
    """One request's context as llava-star asks it."""
    context: str
    doc: Optional[Tuple[Any, str, str, Any]] = None  # (doc_to_visual, task, split, doc_id); None: text only
    requests: List[int] = field(default_factory=list)  # indices of the requests it answers

    @property
    def where(self) -> str:
        return "a text-only request" if self.doc is None else f"task {self.doc[1]} doc {self.doc[3]}"


class LlavaStar(lmms):
    is_simple = True

    def __init__(self, **model_args) -> None:
        super().__init__()
        try:
            self.args = margs.parse(model_args)
        except margs.ModelArgsError as e:
            _fail(f"--model_args: {e}")
        self.accelerator = Accelerator()
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.args.conv_template = self.args.conv_template or conv_mode_for(self.args.pretrained)
        self._load()

    # ------------------------------------------------------------------ loading
    def _device(self) -> str:
        """The device this process loads the model on."""
        device = self.args.device
        if device is None:  # accelerate's choice: the CPU (none there, or ACCELERATE_USE_CPU) or this process's GPU
            d = self.accelerator.device
            if d.type == "cpu":
                return "cpu"  # accelerate says cpu:0 in a multi-CPU run; the loader picks fp32 for "cpu"
            return f"cuda:{d.index or 0}" if self._world_size > 1 else "cuda"
        if device == "cuda" and self._world_size > 1:
            return f"cuda:{self.accelerator.local_process_index}"
        return device

    def _load(self) -> None:
        from llava.conversation import conv_templates

        from llava_star.loader import load_pretrained_model

        a = self.args
        if a.conv_template not in conv_templates:
            _fail(f"--model_args: conv_template={a.conv_template} is not one of llava's templates: "
                  f"{', '.join(sorted(conv_templates))}")
        try:
            self._tokenizer, self._model, self._processor, self._max_length = load_pretrained_model(
                os.path.expanduser(a.pretrained), a.model_base, a.model_name, star=a.method_config,
                device=self._device(), attn_implementation=a.attn_implementation, fixed_grid=a.fixed_grid)
        except (FileNotFoundError, ValueError) as e:
            _fail(f"--model_args pretrained={a.pretrained}: {e}")
        except OSError as e:  # not a checkpoint folder, hub id unreachable, ...
            _fail(f"--model_args pretrained={a.pretrained}: cannot load the model: {e}")
        if a.batch_size > 1:
            self._model.config.tokenizer_padding_side = "left"  # as the runners do for batches

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def config(self):
        return self._model.config

    @property
    def device(self):
        return self._model.device

    @property
    def batch_size(self) -> int:
        return self.args.batch_size

    @property
    def max_length(self) -> int:
        return self._max_length

    # ----------------------------------------------------------------- requests
    def _question(self, args: tuple) -> _Question:
        if len(args) == 2:  # multiple_choice's unconditional (acc_mutual_info) requests
            return _Question(args[0])
        context, _, doc_to_visual, doc_id, task, split = args[:6]
        return _Question(context, (doc_to_visual, task, split, doc_id))

    def _prepare(self, q: _Question) -> Prepared:
        """The question's image, opened and preprocessed as the runners do (RGB, llava's
        process_images); text only when the doc has none."""
        from llava.mm_utils import process_images
        from PIL import Image

        item = Item(qid=q.where, prompt=q.context, query=q.context, image=None, line=0)
        if q.doc is None:
            return Prepared(item)
        doc_to_visual, task, split, doc_id = q.doc
        visuals = [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]
        if not visuals:
            return Prepared(item)
        if len(visuals) > 1:
            raise ValueError(f"llava_star: {q.where} has {len(visuals)} images; llava-star asks about one image "
                             "per question")
        if not isinstance(visuals[0], Image.Image):
            raise ValueError(f"llava_star: {q.where} gives a {type(visuals[0]).__name__}, not an image "
                             "(llava_star answers image tasks)")
        image = eight_bit(visuals[0]).convert("RGB")
        if min(image.size) < 4:
            raise ValueError(f"llava_star: {q.where}: the image is {image.size[0]}x{image.size[1]} pixels, "
                             "too small for CLIP's processor")
        item.image = q.where
        return Prepared(item, process_images([image], self._processor, self.config)[0], image.size)

    def _prompt(self, p: Prepared, answer: Optional[str] = None) -> str:
        """The runners' prompt; a context that places llava's image token itself keeps it."""
        from llava.constants import DEFAULT_IMAGE_TOKEN

        has_image = p.item.image is not None
        placed = p.item.query.count(DEFAULT_IMAGE_TOKEN)
        if placed > int(has_image):
            raise ValueError(f"llava_star: {p.item.qid}: the context has {placed} image tokens for "
                             f"{int(has_image)} image(s)")
        start_end = bool(getattr(self.config, "mm_use_im_start_end", False))
        return build_prompt(p.item.query, self.args.conv_template, start_end, has_image and not placed, answer)

    def _ids(self, prompt: str) -> torch.Tensor:
        from llava.constants import IMAGE_TOKEN_INDEX
        from llava.mm_utils import tokenizer_image_token

        return tokenizer_image_token(prompt, self._tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")

    def _records(self, n: int) -> List[dict]:
        """The last prefill's pruning, per sample, as logged."""
        base = {"method": self.args.method}
        if self.args.budget is not None:
            base["budget"] = self.args.budget
        records = self._model.star_record or []
        if len(records) != n:
            raise RuntimeError(f"llava_star: {len(records)} pruning records for a batch of {n}")
        return [{**base, **r.summary(), "tokens_per_layer": list(r.tokens_per_layer),
                 "kept": r.final_kept.tolist()} for r in records]

    def _batches(self, questions: List[_Question]):
        """Batches of at most batch_size questions, image and text-only apart (llava cannot
        mix them in one call), images loaded one batch at a time; longest contexts first
        (least padding)."""
        order = sorted(questions, key=lambda q: -len(q.context))
        for i in range(0, len(order), self.batch_size):
            chunk = order[i:i + self.batch_size]
            prepared = [self._prepare(q) for q in chunk]
            for with_image in (True, False):
                part = [(q, p) for q, p in zip(chunk, prepared) if (p.item.image is not None) == with_image]
                if part:
                    yield [q for q, _ in part], [p for _, p in part]

    def _run(self, fn, questions: List[_Question], prepared: List[Prepared], per_question: list):
        """fn(prepared, per_question) over one batch; a batch with a prompt that does not fit
        the context is run again one question at a time, so the error names that question."""
        try:
            return fn(prepared, per_question)
        except ValueError as e:
            if CONTEXT_ERROR not in str(e):
                raise
            if len(prepared) == 1:
                raise ValueError(f"llava_star: {questions[0].where}: {e}") from None
        singles = [self._run(fn, [q], [p], [x]) for q, p, x in zip(questions, prepared, per_question)]
        return tuple(sum((list(out[k]) for out in singles), []) for k in range(len(singles[0])))

    # ----------------------------------------------------------- generate_until
    def _gen_kwargs(self, task_kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """lmms-eval's llava model's reading of a task's generation_kwargs (`until` unused)."""
        kw = dict(task_kwargs)
        aspect = kw.pop("image_aspect_ratio", None)
        if aspect is not None and "image_aspect_ratio" not in self.config.__dict__:
            self.config.image_aspect_ratio = aspect
        temperature = kw.get("temperature", 0) or 0
        return dict(do_sample=temperature > 0, temperature=temperature, top_p=kw.get("top_p"),
                    num_beams=kw.get("num_beams", 1) or 1,
                    max_new_tokens=kw.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS), use_cache=True)

    def _generate(self, prepared: List[Prepared], gen_kwargs: Dict[str, Any]):
        ids = [self._ids(self._prompt(p)) for p in prepared]
        input_ids, attention_mask, pad_kwargs = padded_batch(ids, self._tokenizer, self.device)
        images, image_sizes = image_batch(prepared, self._model)
        with torch.inference_mode(), warnings.catch_warnings():
            # llava passes temperature/top_p even when greedy; transformers warns on every call
            warnings.filterwarnings("ignore", message=r"`do_sample` is set to `False`")
            out = self._model.generate(input_ids, images=images, image_sizes=image_sizes,
                                       attention_mask=attention_mask, **gen_kwargs, **pad_kwargs)
        texts = [t.strip() for t in self._tokenizer.batch_decode(out, skip_special_tokens=True)]
        return texts, self._records(len(prepared))

    def generate_until(self, requests: List[Instance]) -> List[GenerationResult]:
        """The answer per request, with its pruning record (a GenerationResult)."""
        answers: List[Optional[GenerationResult]] = [None] * len(requests)
        by_kwargs: Dict[str, List[_Question]] = defaultdict(list)
        for i, request in enumerate(requests):
            q = self._question(request.args)
            q.requests.append(i)
            by_kwargs[json.dumps(request.args[1], sort_keys=True, default=str)].append(q)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="llava_star generate_until")
        for questions in by_kwargs.values():
            gen_kwargs = self._gen_kwargs(requests[questions[0].requests[0]].args[1])
            generate = lambda prepared, _: self._generate(prepared, gen_kwargs)  # noqa: E731
            for batch, prepared in self._batches(questions):
                texts, records = self._run(generate, batch, prepared, [None] * len(batch))
                for q, text, record in zip(batch, texts, records):
                    (i,) = q.requests
                    answers[i] = _result(text, record)
                    self.cache_hook.add_partial("generate_until", (q.context, requests[i].args[1]), text)
                bar.update(len(batch))
        bar.close()
        return answers

    def generate_until_multi_round(self, requests) -> List[str]:
        raise NotImplementedError("llava_star: multi-round generation is not supported")

    # ------------------------------------------------------------ loglikelihood
    def _continuation_ids(self, p: Prepared, context_ids: torch.Tensor, continuation: str) -> torch.Tensor:
        """The tokens the continuation adds to the context's prompt (its answer closed by the
        template's end of turn)."""
        full = self._ids(self._prompt(p, continuation))
        n = context_ids.numel()
        if full.numel() <= n or not torch.equal(full[:n], context_ids):
            raise ValueError(f"llava_star: {p.item.qid}: the continuation {continuation!r} does not extend the "
                             "context's tokens")
        return full[n:]

    def _score(self, prepared: List[Prepared], continuations: List[List[str]]):
        """(mean NLL, greedy) per continuation of each context: one prefill of the contexts,
        then all continuations at once over the pruned cache, each row a copy of its context's."""
        context_ids = [self._ids(self._prompt(p)) for p in prepared]
        conts = [self._continuation_ids(p, c_ids, c) for p, c_ids, cs in zip(prepared, context_ids, continuations)
                 for c in cs]
        rows = torch.tensor([b for b, cs in enumerate(continuations) for _ in cs], device=self.device)
        input_ids, attention_mask, _ = padded_batch(context_ids, self._tokenizer, self.device)
        images, image_sizes = image_batch(prepared, self._model)
        with torch.inference_mode():
            out = self._model(input_ids, attention_mask=attention_mask, images=images, image_sizes=image_sizes,
                              use_cache=True, last_logits_only=True)
            records = self._records(len(prepared))
            first = out.logits[:, -1].log_softmax(-1)[rows]  # predicts each continuation's first token
            rest = self._decode(out.past_key_values, rows, conts)
        results = []
        for n, cont in enumerate(conts):
            logp = torch.cat([first[n:n + 1], rest[n, :cont.numel() - 1]]) if rest is not None else first[n:n + 1]
            tokens = cont.to(logp.device)
            picked = logp.gather(1, tokens[:, None]).squeeze(1)
            results.append((float(-picked.mean()), bool((logp.argmax(-1) == tokens).all())))
        return results, [records[int(b)] for b in rows]

    def _decode(self, cache, rows: torch.Tensor, conts: List[torch.Tensor]):
        """Log-probabilities after each continuation token but the last, [N, T-1, V], over the
        context's cache (None when every continuation is one token)."""
        longest = max(c.numel() for c in conts)
        if longest == 1:
            return None
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(conts), longest - 1), pad, dtype=torch.long)
        valid = torch.zeros((len(conts), longest - 1), dtype=torch.long)
        for n, c in enumerate(conts):  # right-padded: padding sits after every real token
            ids[n, :c.numel() - 1] = c[:-1]
            valid[n, :c.numel() - 1] = 1
        cache.reorder_cache(rows)  # one copy of its context's (pruned) cache per continuation
        out = self._model(ids.to(self.device), attention_mask=valid.to(self.device), past_key_values=cache,
                          use_cache=False)
        return out.logits.log_softmax(-1)

    def loglikelihood(self, requests: List[Instance]) -> List[GenerationResult]:
        """(mean NLL, greedy) per request, each wrapped in a GenerationResult (see the module
        docstring)."""
        results: List[Optional[GenerationResult]] = [None] * len(requests)
        contexts: Dict[tuple, _Question] = {}
        for i, request in enumerate(requests):
            args = request.args
            q = self._question(args)
            key = (q.context,) if q.doc is None else (q.context, *q.doc[1:])
            contexts.setdefault(key, q).requests.append(i)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="llava_star loglikelihood")
        for batch, prepared in self._batches(list(contexts.values())):
            continuations = [[requests[i].args[1] for i in q.requests] for q in batch]
            scored, records = self._run(self._score, batch, prepared, continuations)
            indices = [i for q in batch for i in q.requests]
            for i, result, record in zip(indices, scored, records):
                results[i] = _result(result, record)
                self.cache_hook.add_partial("loglikelihood", requests[i].args[:2], result)
            bar.update(len(indices))
        bar.close()
        return results
