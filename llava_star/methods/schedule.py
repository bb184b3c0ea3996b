"""Layer schedules of multi-stage baselines, published for a 32-layer model."""
from __future__ import annotations

from typing import Sequence, Tuple

from ..engine.plan import DecoderStage
from .registry import REFERENCE_LAYERS


def scale_layer(layer: int, num_layers: int) -> int:
    """Map a layer index published for a 32-layer model to a model with `num_layers` layers."""
    return max(1, int(layer * num_layers / REFERENCE_LAYERS + 0.5))


def check_schedule(method: str, layers: Sequence[int], keeps: Sequence) -> None:
    """Layers strictly increasing, one keep value per layer, keep values not increasing."""
    layers, keeps = tuple(layers), tuple(keeps)
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"{method}: layers must increase, got {list(layers)}")
    if len(layers) != len(keeps):
        raise ValueError(f"{method}: {len(layers)} layers but {len(keeps)} keep values; they must match")
    if any(b > a for a, b in zip(keeps, keeps[1:])):
        raise ValueError(f"{method}: keep values must not increase, got {list(keeps)}")


def decoder_stages(method: str, layers, score: str, keeps, num_layers: int, offset: int = 0,
                   **stage) -> Tuple[DecoderStage, ...]:
    """Stages at the published layers scaled to `num_layers` (plus `offset`: 1 where the
    published layer is the one whose output is pruned); on shallow models two stages that
    would land on one layer are kept distinct (the later moves one layer down). `stage`:
    further DecoderStage fields."""
    check_schedule(method, layers, keeps)
    scaled = [scale_layer(l, num_layers) + offset for l in layers]
    for i in range(1, len(scaled)):
        scaled[i] = max(scaled[i], scaled[i - 1] + 1)
    return tuple(DecoderStage(l, score, k, **stage) for l, k in zip(scaled, keeps))
