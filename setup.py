"""llava-star: training-free visual-token pruning (STAR and peers) for the LLaVA codebase."""
from setuptools import find_packages, setup

# What lmms-eval 0.7.3 needs to run image tasks from its CLI, at versions that keep
# transformers 4.37.2: datasets 4+ needs huggingface_hub >= 1.0, which transformers 4.37
# refuses; filelock 4 lacks the `_api.FileLockMeta` lmms-eval patches. lmms-eval itself
# goes in with --no-deps (its metadata asks for transformers>=4.39.2); see README.
LMMS_DEPS = ["datasets==3.6.0", "huggingface_hub>=0.19.3,<1.0", "filelock>=3.16,<4", "evaluate", "sacrebleu",
             "loguru", "tenacity", "pytz", "pytablewriter"]

# `patches/` lives at the top of the repo (the design card) but installs as
# `llava_star.patches`, so nothing named `patches` lands in site-packages.
packages = [p for p in find_packages(exclude=("tests", "tests.*", "patches")) if p.startswith("llava_star")]

setup(
    name="llava-star",
    version="0.1.0",
    description="STAR two-stage visual-token pruning for LLaVA (plug-in for llava-torch)",
    python_requires=">=3.9",
    packages=packages + ["llava_star.patches"],
    package_dir={"llava_star.patches": "patches"},
    # llava-torch itself is installed with --no-deps (its metadata pins torch 2.0.1,
    # gradio, bitsandbytes, timm); these are its real inference needs plus ours.
    install_requires=[
        "torch>=2.1",
        "transformers==4.37.2",
        "tokenizers>=0.15,<0.16",
        "sentencepiece",
        "protobuf",
        "accelerate",
        "shortuuid",
        "pillow",
        "numpy",
        "tqdm",
        "einops",
    ],
    # No "gpu" extra: inference needs neither flash-attn nor deepspeed, and flash-attn cannot
    # build inside pip's isolated environment (it imports torch); the README installs it as a
    # step of its own with --no-build-isolation.
    extras_require={
        "test": ["pytest", "scikit-image", "matplotlib"],
        "viz": ["matplotlib"],
        "lmms": LMMS_DEPS,  # with `pip install --no-deps lmms-eval==0.7.3`
    },
    # `--model llava_star` for lmms-eval (its entry-point group for external models)
    entry_points={"lmms_eval.models": ["llava_star = llava_star.lmms:manifest"]},
)
