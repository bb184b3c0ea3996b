"""`--help` of every CLI is fast: building the parser imports none of torch, llava,
transformers, matplotlib (issue 14, item 4). Measured in a fresh interpreter, as a user runs it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from help_probe import run_help

CLIS = {
    "llava_star.eval.model_vqa_loader": ["--help"],
    "llava_star.eval.model_vqa_science": ["--help"],
    "llava_star.eval.model_vqa": ["--help"],
    "llava_star.eval.score": ["--help"],
    "llava_star.eval.score mme": ["mme", "--help"],
    "llava_star.eval.score textvqa": ["textvqa", "--help"],
    "llava_star.prompting": ["--help"],
    "llava_star.bench": ["--help"],
    "llava_star.flops": ["--help"],
    "llava_star.methods": ["--help"],
    "llava_star.demo": ["--help"],
    "llava_star.visualize": ["--help"],
    "llava_star.reproduce": ["--help"],
    "llava_star.tiny": ["--help"],
}
# The bound allows for a machine shared with other jobs; an import of torch alone takes longer
# than 2 s here, and the sys.modules check below fails on it whatever the load.
WALL_LIMIT_S = 6.0

@pytest.mark.parametrize("name", sorted(CLIS))
def test_help_imports_nothing_heavy_and_is_fast(name):
    module = name.split()[0]
    if module == "llava_star.eval.score":
        module = "llava_star.eval.score.__main__"
    p, wall = run_help(module, CLIS[name])
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "HEAVY:", f"{name} --help imported {p.stdout.splitlines()[-1]}"
    assert wall < WALL_LIMIT_S, f"{name} --help took {wall:.1f} s"
    if module.startswith("llava_star.eval.model_vqa"):  # the runners take llava's and llava-hf checkpoints
        assert "--host {auto,llava,hf}" in p.stdout


def test_conv_mode_for_prints_the_template_for_the_scripts():
    p = subprocess.run([sys.executable, "-m", "llava_star.prompting", "--conv-mode-for", "liuhaotian/llava-v1.6-34b"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "chatml_direct"
