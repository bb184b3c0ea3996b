"""Prefill FLOPs of every method: theory, and a count through the real code path.

    python -m llava_star.flops --geometry llava-v1.5-7b --method star --budget 58 --text-tokens 64 --json
    python -m llava_star.flops --geometry llava-v1.5-7b --method all --budget 58        # side by side
    python -m llava_star.flops --geometry llava-v1.5-7b --method fastv --budget 58 --measured

Units (see docs/flops.md):
- `*_flops` are FLOPs = 2 x multiply-accumulates, counting every matmul exactly (q/k/v/o
  projections with grouped-query heads, attention scores and values over the full n x n
  square as SDPA's FLOP counters do, the 3-matrix SwiGLU FFN). This is what
  `torch.utils.flop_counter` counts, and `--measured` checks it.
- `fastv_*` is the formula FastV and STAR print, per decoder layer `4nd^2 + 2n^2d + 2ndm`:
  multiply-accumulates with a 2-matrix FFN, decoder layers only.
- n counts every token of the prompt: the visual tokens a layer sees plus `--text-tokens`
  (all non-image tokens). `--text-tokens 0` gives the visual-only count some papers use.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from .engine.counts import ImageTokens, decoder_keep, ratio_of, vision_keep
from .engine.plan import Plan
from .methods import METHODS, MethodConfig, get
from .pruning.merge import recycled_count
from .geometry import GEOMETRIES, Geometry, get_geometry

DEFAULT_TEXT_TOKENS = 64
DEFAULT_TEXT_BEFORE = 35  # LLaVA-1.5's vicuna_v1 system prompt + "USER: " with BOS


def split_text(text_tokens: int, text_before: Optional[int] = None):
    """(tokens before the image, tokens after it). Decoder scores need >= 1 token after."""
    if text_tokens < 0:
        raise ValueError(f"text tokens must be >= 0, got {text_tokens}")
    before = min(DEFAULT_TEXT_BEFORE if text_before is None else text_before, max(text_tokens - 1, 0))
    if before < 0:
        raise ValueError(f"text before the image must be >= 0, got {before}")
    return before, text_tokens - before


# --------------------------------------------------------------------------- counts
def visual_counts(plan: Plan, g: Geometry):
    """(visual tokens after the vision stage, visual tokens each decoder layer sees), per
    image, as the engine resolves the plan. Multi-crop geometries (NeXT, unpad and newline
    rows ignored) follow `plan.unit`: "crop" keeps that many of every crop's 576 patches;
    "image" (the engine's default) spreads an int vision budget evenly over the crops
    (rounded up per crop) and keeps an int decoder budget for the whole image. Ratios are of
    every crop's patches (vision) or of all the image's patches (decoder) in both units."""
    if g.crops > 1 and plan.single_crop_only:
        raise ValueError(f"{plan.name} needs one crop per image (LLaVA-1.5 layouts); {g.name} has {g.crops}")
    image = _image(g)
    first = image.rows
    if plan.vision is not None:
        extra = plan.vision.merge + int(plan.vision.cls_token)  # VisionZip's contextual and CLS tokens
        first = (vision_keep(plan.vision.keep, plan.unit, image) + extra) * g.crops
    prev, stages, per_layer = first, {st.layer: st for st in plan.decoder}, []
    for i in range(g.layers):
        if i in stages:
            k = min(decoder_keep(stages[i].keep, plan.unit, image), prev)
            prev = k + (recycled_count(prev - k) if stages[i].recycle else 0)
        per_layer.append(prev)
    return first, per_layer


def _image(g: Geometry) -> ImageTokens:
    return ImageTokens(g.crops, g.num_patches, g.num_patches * g.crops)


# ---------------------------------------------------------------- MAC formulas
def decoder_layer_macs(n: int, g: Geometry) -> int:
    """Exact matmul multiply-accumulates of one LLaMA layer over n tokens (prefill)."""
    d, kv = g.hidden, g.num_kv_heads * g.head_dim
    return n * (2 * d * d + 2 * d * kv) + 2 * n * n * d + 3 * n * d * g.intermediate


def fastv_layer(n: int, g: Geometry) -> int:
    """FastV's / STAR's per-layer formula 4nd^2 + 2n^2d + 2ndm (MAC units, 2-matrix FFN)."""
    d = g.hidden
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * g.intermediate


def clip_layer_macs(g: Geometry) -> int:
    v = g.vision
    t = v.tokens
    return 4 * t * v.hidden ** 2 + 2 * t * t * v.hidden + 2 * t * v.hidden * v.intermediate


def patch_embed_macs(g: Geometry) -> int:
    v = g.vision
    return v.num_patches * v.hidden * 3 * v.patch_size ** 2


def projector_macs(tokens: int, g: Geometry) -> int:
    D, dv = g.hidden, g.vision.hidden
    if g.projector == "linear":
        return tokens * dv * D
    m = re.match(r"^mlp(\d+)x_gelu$", g.projector)
    if not m:
        raise ValueError(f"unknown projector {g.projector!r}")
    return tokens * (dv * D + (int(m.group(1)) - 1) * D * D)


def vision_score_macs(stage, g: Geometry) -> int:
    """Stage-1 overhead: q and k of the select layer recomputed over CLS + patches, and the
    q k^T logits (softmax and means are not matmuls); VisionZip's merge adds the key
    similarity of the other patches to the contextual targets and their means."""
    if stage.score == "random":
        return 0
    v = g.vision
    t = v.tokens
    macs = 2 * t * v.hidden ** 2 + t * t * v.hidden
    if stage.merge:
        others = v.num_patches - ratio_of(stage.keep, v.num_patches) - stage.merge
        macs += others * stage.merge * (v.hidden // v.heads) + stage.merge * others * v.hidden
    return macs


def decoder_score_macs(stage, rows: int, keys: int, g: Geometry) -> int:
    """Stage-2 overhead: q of the scoring rows and their logits against the `keys` tokens of
    the ranking layer (cached by layer K-1, or projected from layer K's input: `ranks="own"`)."""
    if stage.score == "random":
        return 0
    macs = rows * g.hidden * g.hidden + rows * keys * g.hidden
    if stage.ranks == "own":
        macs += keys * g.hidden * g.num_kv_heads * g.head_dim
    return macs


def recycle_macs(dropped: int, g: Geometry) -> int:
    """SparseVLM's recycling of `dropped` tokens: the pairwise distances of the recycled ones
    (one n x n matmul) and the cluster means."""
    if dropped <= 0:
        return 0
    n = min(dropped, int(dropped * 0.3) + 1)
    return n * n * g.hidden + recycled_count(dropped) * n * g.hidden


@dataclass
class Theory:
    method: str
    budget: Optional[int]
    geometry: str
    text_tokens: int
    text_before: int
    vision_kept: int
    tokens_per_layer: List[int]
    vision: int
    projector: int
    decoder: int
    scoring_vision: int
    scoring_decoder: int
    lm_head: int
    fastv_decoder: int
    stock: bool = False
    notes: List[str] = field(default_factory=list)

    @property
    def t_eq(self) -> float:
        return sum(self.tokens_per_layer) / len(self.tokens_per_layer)

    @property
    def scoring(self) -> int:
        return self.scoring_vision + self.scoring_decoder

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.decoder + self.scoring + self.lm_head


def theory(g: Geometry, plan: Optional[Plan], text_tokens: int = DEFAULT_TEXT_TOKENS,
           text_before: Optional[int] = None, budget: Optional[int] = None) -> Theory:
    """Prefill FLOPs of one image + `text_tokens` text tokens. `plan=None` is stock LLaVA
    (CLIP runs all its layers; no pruning, no scoring); `Plan("none")` is our engine with
    pruning disabled (CLIP stops at the select layer)."""
    before, after = split_text(text_tokens, text_before)
    stock = plan is None
    plan_ = plan if plan is not None else Plan("none")
    kept1, per_layer = visual_counts(plan_, g)
    clip_layers = g.vision.layers if stock else g.vision.layers_run
    vision = g.crops * (patch_embed_macs(g) + clip_layers * clip_layer_macs(g))
    projector = projector_macs(kept1, g)
    decoder = sum(decoder_layer_macs(v + text_tokens, g) for v in per_layer)
    fastv = sum(fastv_layer(v + text_tokens, g) for v in per_layer)
    s_vis = g.crops * vision_score_macs(plan_.vision, g) if plan_.vision is not None else 0
    s_dec = 0
    if any(st.score == "embedding_raters" for st in plan_.decoder):
        s_dec += kept1 * after * g.hidden  # SparseVLM's raters: V T^T of the input embeddings
    for st in plan_.decoder:
        rows = 1 if st.score == "last_token" else after
        before = per_layer[st.layer - 1]
        s_dec += decoder_score_macs(st, rows, before + text_tokens, g)
        if st.recycle:
            s_dec += recycle_macs(before - min(decoder_keep(st.keep, plan_.unit, _image(g)), before), g)
    lm_head = g.hidden * g.vocab  # the last position only (what generate needs)
    return Theory(plan_.name if not stock else "stock", budget, g.name, text_tokens, before, kept1, per_layer,
                  2 * vision, 2 * projector, 2 * decoder, 2 * s_vis, 2 * s_dec, 2 * lm_head, fastv, stock)


def method_plan(name: str, budget: Optional[int], g: Geometry, **knobs) -> Plan:
    return MethodConfig.from_name(name, budget, **knobs).plan(g.layers)


def report(g: Geometry, plan: Optional[Plan], text_tokens: int, text_before: Optional[int] = None,
           budget: Optional[int] = None, measured: bool = False) -> Dict[str, object]:
    """One method against stock LLaVA, as the CLI prints it."""
    t = theory(g, plan, text_tokens, text_before, budget)
    base = theory(g, None, text_tokens, text_before)
    out: Dict[str, object] = {
        "geometry": g.name, "method": t.method, "budget": budget, "text_tokens": text_tokens,
        "text_before_image": t.text_before, "visual_tokens": g.visual_tokens,
        "vision_kept": t.vision_kept, "remaining": t.tokens_per_layer[-1], "t_eq": round(t.t_eq, 3),
        "tokens_per_layer": t.tokens_per_layer,
        "decoder_flops": t.decoder, "baseline_decoder_flops": base.decoder,
        "ratio": t.decoder / base.decoder,
        "total_flops": t.total, "baseline_total_flops": base.total, "total_ratio": t.total / base.total,
        "vision_flops": t.vision, "projector_flops": t.projector, "scoring_flops": t.scoring,
        "scoring_vision_flops": t.scoring_vision, "scoring_decoder_flops": t.scoring_decoder,
        "lm_head_flops": t.lm_head, "baseline_vision_flops": base.vision,
        "fastv_decoder": t.fastv_decoder, "fastv_baseline_decoder": base.fastv_decoder,
        "fastv_ratio": t.fastv_decoder / base.fastv_decoder,
        "units": "FLOPs = 2 x MACs, exact matmuls (SwiGLU 3ndm); fastv_* = 4nd^2+2n^2d+2ndm (MACs)",
    }
    if measured:
        m = measure(g, plan, text_tokens, text_before)
        mb = _measured_baseline(g, text_tokens, text_before)
        out["measured"] = m
        out["measured_baseline"] = mb
        out["measured_rel_err"] = {
            "decoder": m["decoder"] / t.decoder - 1, "total": m["total"] / t.total - 1,
            "vision": m["vision"] / t.vision - 1, "projector": m["projector"] / t.projector - 1,
            "baseline_total": mb["total"] / base.total - 1,
        }
    return out


# ------------------------------------------------------------------ measurement
_BASELINES: Dict[tuple, Dict[str, object]] = {}


def _measured_baseline(g: Geometry, text_tokens: int, text_before: Optional[int]):
    key = (g, text_tokens, text_before)
    if key not in _BASELINES:
        _BASELINES[key] = measure(g, None, text_tokens, text_before)
    return _BASELINES[key]


class _MetaBookkeeping(torch.overrides.TorchFunctionMode):
    """Lets the engine run with its weights and activations on the meta device.

    FLOPs depend only on shapes, but the engine's bookkeeping (which tokens are valid, their
    positions, which visual tokens are kept) is data: `torch.nonzero`, `int(t)`,
    `bool(t.all())`. Under this mode:
    - integer and boolean tensors that code creates "on the device of the hidden states"
      (factories with device=meta, `.to(meta)`) stay on the CPU, with real values;
    - an op that mixes meta and CPU tensors gets its CPU arguments moved to meta (its
      result is data of the model, e.g. a gather of hidden states by a CPU index);
    - copying a meta float tensor to the CPU (scores stored in `star_record`) gives zeros;
    - the selector keeps the first k tokens of meta scores (`engine.seams.top_k`).
    Real execution never enters this mode."""

    _FACTORIES = {torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FACTORIES:
            out = func(*args, **kwargs)
            if out.device.type == "meta" and not out.is_floating_point():
                kwargs = dict(kwargs, device="cpu")
                out = func(*args, **kwargs)
            return out
        if func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda):
            self_ = args[0]
            target = _target_device(func, args[1:], kwargs)
            if target is not None:
                if self_.device.type == "cpu" and target == "meta" and not self_.is_floating_point():
                    return self_ if not _dtype_arg(args[1:], kwargs) else \
                        func(self_, *[a for a in args[1:] if not _is_device(a)],
                             **{k: v for k, v in kwargs.items() if k != "device"})
                if self_.device.type == "meta" and target != "meta":
                    if not self_.is_floating_point():
                        raise RuntimeError("meta FLOP count: bookkeeping tensor ended up on meta")
                    return torch.zeros(self_.shape, dtype=_dtype_arg(args[1:], kwargs) or self_.dtype)
        if func in (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
                    torch.Tensor.__index__, torch.nonzero, torch.Tensor.nonzero) \
                and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta":
            raise RuntimeError(f"meta FLOP count: data-dependent {getattr(func, '__name__', func)} on a "
                               "meta tensor (bookkeeping must stay on the CPU)")
        flat = _tensors(args) + _tensors(kwargs)
        if any(t.device.type == "meta" for t in flat) and any(t.device.type == "cpu" for t in flat):
            args, kwargs = _to_meta(args), _to_meta(kwargs)
        return func(*args, **kwargs)


def _is_device(a) -> bool:
    return isinstance(a, (torch.device, str)) and str(a).split(":")[0] in ("cpu", "meta", "cuda")


def _dtype_arg(args, kwargs):
    if isinstance(kwargs.get("dtype"), torch.dtype):
        return kwargs["dtype"]
    for a in args:
        if isinstance(a, torch.dtype):
            return a
    return None


def _target_device(func, args, kwargs) -> Optional[str]:
    if func is torch.Tensor.cpu:
        return "cpu"
    if func is torch.Tensor.cuda:
        return "cuda"
    dev = kwargs.get("device")
    if dev is None:
        for a in args:
            if _is_device(a):
                dev = a
            elif isinstance(a, torch.Tensor):
                dev = a.device
    return None if dev is None else str(dev).split(":")[0]


def _tensors(tree) -> list:
    from torch.utils._pytree import tree_leaves
    return [x for x in tree_leaves(tree) if isinstance(x, torch.Tensor)]


def _to_meta(tree):
    from torch.utils._pytree import tree_map
    return tree_map(lambda x: x.to("meta") if isinstance(x, torch.Tensor) and x.device.type == "cpu" else x, tree)


@contextlib.contextmanager
def meta_execution():
    """Within this context a llava_star model on device "meta" runs its real forward (the
    default selector keeps the first k tokens of meta scores: how many is what counts)."""
    with _MetaBookkeeping():
        yield


def prompt_ids(text_tokens: int, text_before: Optional[int] = None, vocab: int = 32000, seed: int = 0,
               batch: int = 1) -> torch.Tensor:
    """[batch, text_tokens + 1] ids: BOS, `before - 1` text ids, IMAGE_TOKEN_INDEX, `after`
    text ids (fixed pseudo-random ids, no tokenizer needed)."""
    from llava.constants import IMAGE_TOKEN_INDEX

    before, after = split_text(text_tokens, text_before)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        text = torch.randint(3, vocab, (text_tokens,), generator=gen)
        if before:
            text[0] = 1  # BOS
        rows.append(torch.cat([text[:before], torch.tensor([IMAGE_TOKEN_INDEX]), text[before:]]))
    return torch.stack(rows)


_MODEL_CACHE: Dict[str, object] = {}


def meta_model(g: Geometry):
    """A meta-device llava model of geometry g, stock (cached per geometry; callers convert a copy)."""
    from .geometry import build_model

    if g.name not in _MODEL_CACHE or _MODEL_CACHE[g.name][0] != g:
        _MODEL_CACHE[g.name] = (g, build_model(g, device="meta"))
    return _MODEL_CACHE[g.name][1]


def _categorise(counts: Dict[str, Dict[object, int]]) -> Dict[str, int]:
    tot = lambda name: sum(counts[name].values())  # noqa: E731
    out = {"total": tot("Global"), "decoder": 0, "vision": 0, "projector": 0, "lm_head": 0}
    for name in counts:
        if re.search(r"\.model\.layers\.\d+$", name):
            out["decoder"] += tot(name)
        elif re.search(r"vision_model\.encoder\.layers\.\d+$", name) or name.endswith("vision_model.embeddings"):
            out["vision"] += tot(name)
        elif name.endswith("mm_projector"):
            out["projector"] += tot(name)
        elif name.endswith("lm_head"):
            out["lm_head"] += tot(name)
    out["scoring"] = out["total"] - out["decoder"] - out["vision"] - out["projector"] - out["lm_head"]
    return out


def flop_counter():
    """FlopCounterMode that also counts the CPU's fused attention kernel: torch's registry
    knows the CUDA SDPA kernels but not `_scaled_dot_product_flash_attention_for_cpu`, so a
    plain counter misses all decoder attention on a CPU (on meta SDPA decomposes into
    counted matmuls). Same formula as torch's own SDPA entries (full square, causal ignored)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = cpu_sdpa
    return FlopCounterMode(display=False, custom_mapping=mapping)


def measure(g: Geometry, plan: Optional[Plan], text_tokens: int = DEFAULT_TEXT_TOKENS,
            text_before: Optional[int] = None, device: str = "meta") -> Dict[str, object]:
    """FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` on a meta-device model of
    geometry g (no weights), through llava's merge and our engine (`apply_star`) for a plan,
    or stock llava's vision tower and LlamaModel for `plan=None`. Returns FLOPs per part
    (decoder layers, vision, projector, lm_head, and `scoring` = everything else: the
    re-computed q/k of both stages) and the per-layer visual token counts the engine recorded.

    `device="cpu"` runs the same count on a real random-weight model instead (small
    geometries only), which checks that the meta run counts what real execution does."""
    import copy

    from .geometry import build_model
    from .hosts.llava import apply_star

    before, after = split_text(text_tokens, text_before)
    if after < 1:
        raise ValueError("a measured count needs at least one text token after the image (--text-tokens >= 1)")
    if device == "meta":
        model = copy.deepcopy(meta_model(g))  # meta: no storage copied
    else:
        model = build_model(g, device=device)
    ids = prompt_ids(text_tokens, text_before, g.vocab)
    v = g.vision
    pixels = torch.randn(1, 3, v.image_size, v.image_size, device=device)
    counter = flop_counter()
    record = None
    with torch.no_grad(), (meta_execution() if device == "meta" else contextlib.nullcontext()):
        if plan is None:
            with counter:
                _StockPrefill(model)(ids, pixels)  # a module, so FLOPs are named from the model down
        else:
            apply_star(model, plan)
            with counter:
                model(input_ids=ids, images=pixels, use_cache=True, last_logits_only=True)  # as generate
            record = model.star_record[0]
    out: Dict[str, object] = dict(_categorise(counter.get_flop_counts()))
    if record is not None:
        out["tokens_per_layer"] = list(record.tokens_per_layer)
        out["t_eq"] = record.t_eq
    return out


class _StockPrefill(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, ids, pixels):
        return _stock_prefill(self.m, ids, pixels)


def _stock_prefill(model, ids, pixels, attention_mask=None, image_sizes=None):
    """Stock llava's prefill, computing logits for the last position only (as generate needs;
    transformers 4.37's LlamaForCausalLM would compute them for every position)."""
    _, pos, mask, _, embeds, _ = model.prepare_inputs_labels_for_multimodal(
        ids, None, attention_mask, None, None, pixels, image_sizes)
    out = model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True)
    return model.lm_head(out.last_hidden_state[:, -1:]).float(), out.past_key_values


# -------------------------------------------------------------------------- CLI
def _fmt_runs(counts: Sequence[int]) -> str:
    parts, i = [], 0
    while i < len(counts):
        j = i
        while j + 1 < len(counts) and counts[j + 1] == counts[i]:
            j += 1
        parts.append(f"{counts[i]}x{j - i + 1}" if j > i else str(counts[i]))
        i = j + 1
    return ", ".join(parts)


def _tf(x: float) -> str:
    return f"{x / 1e12:.3f}"


def _table(rows: List[Dict[str, object]], g: Geometry, text_tokens: int) -> str:
    lines = [f"geometry {g.name}: {g.layers} layers, d {g.hidden}, m {g.intermediate}, {g.heads} heads; "
             f"{g.visual_tokens} visual + {text_tokens} text tokens; CLIP {g.vision.layers} layers d "
             f"{g.vision.hidden} ({g.vision.layers_run} run by llava_star)",
             "FLOPs = 2 x MACs (exact matmuls, SwiGLU); FastV-formula ratio = 4nd^2+2n^2d+2ndm, decoder only",
             ""]
    head = ["method", "budget", "remaining", "t_eq", "decoder TFLOPs", "ratio", "FastV-formula ratio",
            "total TFLOPs", "total ratio", "scoring GFLOPs", "visual tokens per layer"]
    if any("measured" in r for r in rows):
        head[-1:-1] = ["measured total TFLOPs", "err"]
    body = []
    for r in rows:
        line = [r["method"], "-" if r["budget"] is None else str(r["budget"]), str(r["remaining"]),
                f"{r['t_eq']:.1f}", _tf(r["decoder_flops"]), f"{r['ratio']:.3f}", f"{r['fastv_ratio']:.3f}",
                _tf(r["total_flops"]), f"{r['total_ratio']:.3f}", f"{r['scoring_flops'] / 1e9:.2f}",
                _fmt_runs(r["tokens_per_layer"])]
        if "measured" in r:
            line[-1:-1] = [_tf(r["measured"]["total"]), f"{100 * r['measured_rel_err']['total']:+.2f}%"]
        body.append(line)
    base = rows[0]
    body.append(["stock llava", "-", str(g.visual_tokens), f"{g.visual_tokens:.1f}",
                 _tf(base["baseline_decoder_flops"]), "1.000", "1.000", _tf(base["baseline_total_flops"]),
                 "1.000", "0.00", f"{g.visual_tokens}x{g.layers}"])
    if "measured" in base:
        mb = base["measured_baseline"]["total"]
        body[-1][-1:-1] = [_tf(mb), f"{100 * base['measured_rel_err']['baseline_total']:+.2f}%"]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    lines += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    if len(rows) > 1:
        lines += ["", "visual tokens per decoder layer:"]
        names = [f"{r['method']}" + ("" if r["budget"] is None else f"@{r['budget']}") for r in rows]
        w = max(6, *(len(n) for n in names))
        lines.append("layer  " + "  ".join(n.rjust(w) for n in names))
        for i in range(g.layers):
            lines.append(f"{i:>5}  " + "  ".join(str(r["tokens_per_layer"][i]).rjust(w) for r in rows))
        lines.append("t_eq   " + "  ".join(f"{r['t_eq']:.1f}".rjust(w) for r in rows))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from .cli import add_method_args

    p = argparse.ArgumentParser(prog="python -m llava_star.flops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--geometry", default="llava-v1.5-7b", choices=sorted(GEOMETRIES),
                   help="model geometry (default llava-v1.5-7b)")
    p.add_argument("--text-tokens", type=int, default=DEFAULT_TEXT_TOKENS,
                   help=f"all non-image tokens of the prompt (default {DEFAULT_TEXT_TOKENS})")
    p.add_argument("--text-before", type=int, default=None,
                   help=f"of those, tokens before the image (default {DEFAULT_TEXT_BEFORE}, "
                        "at most text-tokens - 1); the rest follow it and are STAR's scoring rows")
    p.add_argument("--measured", action="store_true",
                   help="also count FLOPs with torch.utils.flop_counter on a meta-device model of the "
                        "geometry, through the real code path")
    p.add_argument("--json", action="store_true", help="one JSON line per method")
    add_method_args(p, extra_methods=("all",), extra_help="; 'all': every method at --budget side by side")
    return p


def _plans_for_all(args, g: Geometry):
    from .cli import knob_flags_given

    for flag in knob_flags_given(args):
        raise SystemExit(f"error: {flag} needs a single --method, not 'all'")
    budget = args.budget if args.budget is not None else 58
    out = [("none", None, None)]
    for name in METHODS[1:]:
        b = get(name).nearest_budget(budget)
        if b != budget:
            print(f"note: {name} runs at budget {b}, its nearest published schedule (asked: {budget})",
                  file=sys.stderr)
        unit = {"unit": args.budget_unit} if getattr(args, "budget_unit", "image") != "image" else {}
        plan = method_plan(name, b, g, **unit)
        if g.crops > 1 and plan.single_crop_only:
            print(f"note: {name} skipped: it needs one crop per image, {g.name} has {g.crops}", file=sys.stderr)
            continue
        out.append((name, b, plan))
    return out


def _note_budget(name: str, budget: Optional[int], remaining: int) -> None:
    """Say so when a method ends with another count than the budget asked for (an int budget
    spread over NeXT's crops, rounded up per crop); schedule budgets (SparseVLM) are t_eq-like."""
    if budget is not None and get(name).budgets is None and remaining != budget:
        print(f"note: {name} --budget {budget} keeps {remaining} visual tokens here", file=sys.stderr)


def main(argv=None) -> int:
    from .cli import method_from_args

    args = build_parser().parse_args(argv)
    g = get_geometry(args.geometry)
    if args.measured and g.crops != 1:
        raise SystemExit(f"error: --measured builds a meta model in LLaVA-1.5's flat layout; {g.name} is "
                         "theory-only here (python -m llava_star.bench --model-path counts a real NeXT prefill)")
    if args.method == "all":
        plans = _plans_for_all(args, g)
    else:
        cfg = method_from_args(args)
        plans = [(cfg.name, cfg.budget, cfg.plan(g.layers))]
    rows = []
    try:
        for name, budget, plan in plans:
            if plan is None:
                plan = Plan("none")
            plan.validate(g.layers, g.num_patches)
            rows.append(report(g, plan, args.text_tokens, args.text_before, budget, args.measured))
            _note_budget(name, budget, rows[-1]["remaining"])
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print(_table(rows, g, args.text_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
