"""FLOPs counted, not derived: a llava_star model (or stock llava) runs its real forward on
the meta device (no weights, no data) under torch's FlopCounterMode. `flops.theory` is the
closed form; tests/test_flops.py holds the two equal. Kept apart from flops.py so that
`python -m llava_star.flops --help` and the theory never import torch."""
from __future__ import annotations

import contextlib
import re
from typing import Dict, Optional

import torch

from .engine.plan import Plan
from .flops import DEFAULT_TEXT_TOKENS, split_text
from .geometry import Geometry

_BASELINES: Dict[tuple, Dict[str, object]] = {}


def measured_baseline(g: Geometry, text_tokens: int, text_before: Optional[int]):
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
               batch: int = 1, image_token: Optional[int] = None, image_tokens: int = 1) -> torch.Tensor:
    """[batch, text_tokens + image_tokens] ids: BOS, `before - 1` text ids, the image, `after`
    text ids (fixed pseudo-random ids, no tokenizer needed). The image is llava's one
    IMAGE_TOKEN_INDEX, or, for transformers' LLaVA (whose processor expands `<image>`),
    `image_tokens` copies of `image_token` (which no text id then equals)."""
    if image_token is None:
        from llava.constants import IMAGE_TOKEN_INDEX

        image_token, image_tokens = IMAGE_TOKEN_INDEX, 1
    before, after = split_text(text_tokens, text_before)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        text = torch.randint(3, vocab, (text_tokens,), generator=gen)
        text[text == image_token] = 3
        if before:
            text[0] = 1  # BOS
        rows.append(torch.cat([text[:before], torch.full((image_tokens,), image_token), text[before:]]))
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
    # module names of both hosts: llava's (model.layers, vision_model, mm_projector) and
    # transformers 5's (language_model.layers, a flat vision_tower, multi_modal_projector)
    for name in counts:
        if re.search(r"\.(model|language_model)\.layers\.\d+$", name):
            out["decoder"] += tot(name)
        elif re.search(r"(vision_model|vision_tower)\.(encoder\.layers\.\d+|embeddings)$", name):
            out["vision"] += tot(name)
        elif name.endswith(("mm_projector", "multi_modal_projector")):
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
