"""The engine's two seams: a selector (which tokens a stage keeps) and observers (what
happens when). Tools and tests use these instead of patching the engine's functions.

    with llava_star.engine.seams.hooks(model, selector=recorded.replay(), observer=timer):
        model.generate(...)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch

from ..pruning.select import random_sorted, topk_sorted


@dataclass(frozen=True)
class Selection:
    """One choice the engine asks its selector to make: which of one image's candidate tokens a
    stage keeps. Vision stages ask once per CLIP crop, decoder stages once per batch row, and
    a recycling stage once more for which dropped tokens it merges."""
    stage: str                        # "vision", "decoder" or "recycle"
    index: int                        # the decoder stage's index in the plan (0 for vision)
    sample: int                       # batch row (decoder) or crop row of the tower's batch (vision)
    scores: Optional[torch.Tensor]    # [n] candidate scores; None for the random control
    grid: torch.Tensor                # [n] grid index of every candidate
    k: int                            # how many to keep (1 <= k <= n)
    generator: Optional[torch.Generator] = None  # the random control's draw


Selector = Callable[[Selection], torch.Tensor]


def top_k(sel: Selection) -> torch.Tensor:
    """The default selector: the k best scores (a random k-subset without scores), as
    ascending positions into the candidates."""
    if sel.scores is None:
        return random_sorted(sel.grid.numel(), sel.k, sel.generator).to(sel.grid.device)
    if sel.scores.device.type == "meta":  # FLOP counting: which tokens does not matter, how many does
        return torch.arange(sel.k)
    return topk_sorted(sel.scores, sel.k)


class Recorded:
    """A selector that remembers what `inner` chose, per (stage, stage index, sample), and can
    replay it: a recomputation of the same prefix (e.g. generation without a KV cache) then
    keeps exactly the tokens the recorded call kept, merged tokens included."""

    def __init__(self, inner: Selector = top_k):
        self.inner = inner
        self.choices = {}

    def __call__(self, sel: Selection) -> torch.Tensor:
        out = self.inner(sel)
        self.choices[(sel.stage, sel.index, sel.sample)] = out
        return out

    def replay(self) -> Selector:
        def replayed(sel: Selection) -> torch.Tensor:
            return self.choices[(sel.stage, sel.index, sel.sample)]
        return replayed


class Observer:
    """Base class of the observer seam; every hook is a no-op. Phases: "vision" (CLIP and
    projector), "vision_scores" (a vision stage's scoring and selection), "decoder_scores"
    (a decoder stage's scoring and selection)."""

    @contextlib.contextmanager
    def phase(self, name: str):
        yield

    def prefilled(self, records) -> None:
        """Called with the `PruneRecord`s of every prefill."""


@dataclass
class Hooks:
    """What a model's engine calls out to; `hooks(model, ...)` swaps them for a block."""
    selector: Selector = top_k
    observers: List[Observer] = field(default_factory=list)

    def phase(self, name: str):
        if not self.observers:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for obs in self.observers:
            stack.enter_context(obs.phase(name))
        return stack

    def prefilled(self, records) -> None:
        for obs in self.observers:
            obs.prefilled(records)


@contextlib.contextmanager
def hooks(model, selector: Optional[Selector] = None, observer: Optional[Observer] = None):
    """Within the block, `model` (a llava_star model) selects with `selector` and reports to
    `observer` as well as to the observers it already has."""
    old = model.star_hooks
    model.star_hooks = Hooks(selector or old.selector, old.observers + ([observer] if observer else []))
    try:
        yield model
    finally:
        model.star_hooks = old
