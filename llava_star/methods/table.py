"""The methods as documentation, straight from the registry (docs/methods.md carries it)."""
from __future__ import annotations

from .registry import REFERENCE_LAYERS, UNIT, get, names


def _default(knob) -> str:
    if knob.default is None:
        return knob.shown or "from --budget"
    if isinstance(knob.default, tuple):
        return ",".join(map(str, knob.default))
    return str(knob.default).lower() if isinstance(knob.default, bool) else str(knob.default)


def hosts(name: str) -> str:
    """Where the method runs: the llava host (llava-torch) and the hf host (transformers'
    LlavaForConditionalGeneration / LlavaNextForConditionalGeneration), each on LLaVA-1.5 and
    NeXT. Plans with merged or CLS tokens from the vision stage need one crop per image, so not
    NeXT (both hosts refuse them there)."""
    from . import MethodConfig

    single = MethodConfig.from_name(name).plan(REFERENCE_LAYERS).single_crop_only
    models = "1.5" if single else "1.5, NeXT"
    return f"llava: yes ({models})<br>hf: yes ({models})"


def markdown() -> str:
    rows = ["| method | what it keeps | flags (default) | published budgets | hosts | source |",
            "|---|---|---|---|---|---|"]
    for name in names():
        m = get(name)
        flags = "<br>".join(f"`{k.flag}` ({_default(k)})" for k in m.knobs if k.flag) or "-"
        budgets = ", ".join(map(str, m.budgets)) if m.budgets else "any"
        rows.append(f"| `{name}` | {m.summary} | {flags} | {budgets} | {hosts(name)} | {m.source or '-'} |")
    return "\n".join(rows) + f"\n\nEvery method also takes `--budget N` and `{UNIT.flag}` ({UNIT.default}).\n"


def flags() -> list:
    """Every method flag as "value FLAG" (takes a value) or "switch FLAG", for scripts that
    pass them through (`python -m llava_star.methods --flags`)."""
    out = {"--method": "value", "--budget": "value", UNIT.flag: "value"}
    for name in names():
        for k in get(name).knobs:
            if k.flag and k.flag not in out:
                if k.parse is bool:
                    out[k.flag] = out["--no-" + k.flag[2:]] = "switch"
                else:
                    out[k.flag] = "value"
    return [f"{kind} {flag}" for flag, kind in out.items()]
