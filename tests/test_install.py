"""The install the README gives works as written (issue 14, items 1 and 2): no extra drags in
a package that cannot build in pip's isolated environment, the GPU lines are valid shell and
pip requirements in an order that never prints pip's resolver block, and setup is quiet."""
from __future__ import annotations

import re
import shlex
import subprocess
from importlib import metadata

from packaging.requirements import Requirement

from conftest import REPO

NEEDS_TORCH_TO_BUILD = {"flash-attn", "flash_attn", "deepspeed"}


def test_no_extra_needs_torch_at_build_time():
    reqs = [Requirement(r) for r in metadata.requires("llava-star") or []]
    assert reqs, "llava-star is not installed with its metadata"
    assert not [r for r in reqs if r.name.lower() in NEEDS_TORCH_TO_BUILD]


def gpu_install_lines():
    section = (REPO / "README.md").read_text().split("## Evaluation on a GPU", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_gpu_install_lines_are_valid_and_ordered():
    lines = gpu_install_lines()
    assert subprocess.run(["bash", "-n", "-c", "\n".join(lines)]).returncode == 0
    pkgs = []
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["pip", "install"], line
        pkgs += [(w, line) for w in words[2:] if not w.startswith("-") and w != "."]
        for w in words[2:]:
            if not w.startswith("-") and w != ".":
                Requirement(w)  # raises on a malformed requirement
    names = [Requirement(w).name for w, _ in pkgs]
    assert "llava-torch" in names and "flash-attn" in names
    flash = next(line for w, line in pkgs if w.startswith("flash-attn"))
    assert "--no-build-isolation" in flash
    llava = next(line for w, line in pkgs if w.startswith("llava-torch"))
    assert "--no-deps" in llava
    # llava-torch after every install that resolves dependencies (else pip warns about its pins)
    assert lines.index(llava) > lines.index(next(line for line in lines if "-e ." in line))


def test_setup_installs_llava_torch_last_and_quietly():
    script = (REPO / "scripts" / "setup.sh").read_text()
    installs = [line for line in script.splitlines() if re.search(r"pip_install\b.*\S", line) and "()" not in line]
    assert "llava-torch" in installs[-1] and "--no-deps" in installs[-1], installs
    assert "-qq" in script


UNINSTALLED = """
import sys
# drop the editable install's finder: this interpreter sees only the copied checkout
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import llava_star.patches
assert llava_star.patches.__file__.startswith({root!r}), llava_star.patches.__file__
import llava_star
assert llava_star.__file__.startswith({root!r}), llava_star.__file__
from llava_star import MethodConfig, load_pretrained_model
tok, model, proc, _ = load_pretrained_model({tiny!r}, star=MethodConfig.from_name("star", budget=58))
import torch
from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import tokenizer_image_token
ids = tokenizer_image_token("USER: <image>\\nWhat is it? ASSISTANT:", tok, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
model(input_ids=ids, images=torch.zeros(1, 3, 336, 336))
print("kept", model.star_record[0].final_kept.numel())
"""


def test_runs_from_an_uninstalled_checkout(tiny15, tmp_path):
    """`PYTHONPATH=<checkout>` without `pip install`: `llava_star.patches` (the top-level
    patches/ folder) still imports and pruning runs (issue 14, item 6)."""
    import shutil
    import sys

    root = tmp_path / "checkout"
    for folder in ("llava_star", "patches"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    p = subprocess.run([sys.executable, "-c", UNINSTALLED.format(root=str(root), tiny=tiny15)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "kept 58"
