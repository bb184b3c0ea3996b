"""Methods by name: each method is one `Method` (its knobs with their flags and defaults, and
a builder from knobs to a `Plan`), registered from its own module. The CLI flags, `--help`,
`MethodConfig.from_name` validation and the docs table are all derived from here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from ..engine.plan import Plan

REFERENCE_LAYERS = 32  # the depth (LLaVA-1.5-7B) the baselines' published layer indices refer to
REFERENCE_TOKENS = 576  # LLaVA-1.5's visual tokens per image, what budgets are published for


def int_list(text: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def float_list(text: str) -> Tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def count(text: str):
    """'58' -> 58 tokens, '0.875' -> a ratio."""
    return float(text) if "." in text else int(text)


@dataclass(frozen=True)
class Knob:
    """One setting of a method. `flag` is its command-line spelling (None: Python API only);
    `parse` turns the flag's text into the value; `sets_final` marks a knob that sets the
    final visual-token count itself, so `--budget` with it is refused."""
    name: str
    flag: Optional[str]
    parse: Callable[[str], Any]
    default: Any
    help: str
    sets_final: bool = False
    choices: Optional[Tuple[str, ...]] = None
    shown: str = ""  # the default as the docs table says it, where `default` is None (derived)


@dataclass(frozen=True)
class Shape:
    """What a builder may know of the model: its depth and the most visual tokens a count can
    refer to (LLaVA-1.5's 576 until a model is known)."""
    num_layers: int = REFERENCE_LAYERS
    max_tokens: int = REFERENCE_TOKENS


@dataclass(frozen=True)
class Method:
    """name, a one-line summary (docs, --help), knobs, and `build(budget, knobs, shape) -> Plan`
    where `knobs` holds every knob (defaults filled in). `budgets`: the budgets it has
    published settings for (None: any budget). `check(budget, knobs)` raises ValueError for
    settings that are wrong whatever the model."""
    name: str
    summary: str
    build: Callable[[Optional[int], Dict[str, Any], Shape], Plan]
    knobs: Tuple[Knob, ...] = ()
    budgets: Optional[Tuple[int, ...]] = None
    check: Optional[Callable[[Optional[int], Dict[str, Any]], None]] = None
    source: str = ""

    def nearest_budget(self, budget: int) -> int:
        """The budget a sweep runs for `budget`: itself, or the nearest published one."""
        if self.budgets is None or budget in self.budgets:
            return budget
        return min(self.budgets, key=lambda s: (abs(s - budget), s))


def positions_knob(default: str) -> Knob:
    """The position-id policy of a method with decoder stages, defaulting to its official code's."""
    return Knob("positions", "--positions", str, default,
                "position ids after a decoder stage drops tokens: original (keep them) or reindex "
                "(0..n-1, as PDrop's and SparseVLM's code); default: the method's official choice",
                choices=("original", "reindex"))


# Every method takes the budget unit (LLaVA-NeXT).
UNIT = Knob("unit", "--budget-unit", str, "image",
            "LLaVA-NeXT: counts per whole image (default) or per crop (576 each, Table 2(b) style)",
            choices=("image", "crop"))

_REGISTRY: Dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is registered twice")
    _REGISTRY[method.name] = method
    return method


def get(name: str) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names() -> Tuple[str, ...]:
    """Registered methods, "none" first, in registration order."""
    return tuple(_REGISTRY)


def knobs_of(name: str) -> Tuple[Knob, ...]:
    return get(name).knobs + (UNIT,)
