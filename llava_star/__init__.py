"""llava-star: STAR (Stage-wise Attention-guided token Reduction) and its peers for LLaVA.

    from llava_star import load_pretrained_model, MethodConfig
    tokenizer, model, processor, _ = load_pretrained_model(path, star=MethodConfig.from_name("star", budget=58))
    model.generate(input_ids, images=..., max_new_tokens=...)
    model.star_record  # what was kept, per sample

Names are imported on first use, so `python -m llava_star.<tool> --help` never loads torch.
"""
import importlib
import importlib.abc
import importlib.util
import os
import sys

__version__ = "0.1.0"

_PUBLIC = {
    "load_pretrained_model": "llava_star.loader",
    "apply_star": "llava_star.hosts.llava",
    "remove_star": "llava_star.hosts.llava",
    "StarConfig": "llava_star.methods",
    "MethodConfig": "llava_star.methods",
    "Plan": "llava_star.engine.plan",
    "VisionStage": "llava_star.engine.plan",
    "DecoderStage": "llava_star.engine.plan",
    "PruneRecord": "llava_star.engine.record",
    "hooks": "llava_star.engine.seams",
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'llava_star' has no attribute {name!r}")



class _CheckoutPatches(importlib.abc.MetaPathFinder):
    """`patches/` sits at the checkout's top (the design card) and installs as
    `llava_star.patches`; from an uninstalled checkout (PYTHONPATH=.) this finder gives the
    folder that name, so both ways import the same code. Nothing is imported until asked."""

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "patches")

    def find_spec(self, fullname, path=None, target=None):
        if fullname != __name__ + ".patches":
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(self.folder, "__init__.py"), submodule_search_locations=[self.folder])


if (importlib.util.find_spec(__name__ + ".patches") is None
        and os.path.isfile(os.path.join(_CheckoutPatches.folder, "__init__.py"))):
    sys.meta_path.append(_CheckoutPatches())
