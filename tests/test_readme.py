"""The README's Python example runs as written (issue 14, item 3): the block is cut out of
README.md and run in a fresh interpreter, with only the checkpoint and the photo swapped
for the tiny checkpoint and a real photograph."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, photos

HUB_ID = '"liuhaotian/llava-v1.5-7b"'


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_on_the_tiny_checkpoint(tiny15, tmp_path):
    code = readme_example()
    assert code.count(HUB_ID) == 1 and code.count('"cat.jpg"') == 1
    photo = tmp_path / "cat.jpg"
    photos()["chelsea"].save(photo)
    code = code.replace(HUB_ID, repr(tiny15)).replace('"cat.jpg"', repr(str(photo)))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    summary = ast.literal_eval(lines[-2])
    assert summary["visual_tokens"] == 576 and summary["stage1_kept"] == 504 and summary["final_kept"] == 58
    assert lines[-1].startswith("tensor([")


def test_readme_summary_comment_is_what_7b_would_print():
    """The commented output is LLaVA-1.5-7B's (32 layers, STAR's default K = 16): t_eq from
    the same records the engine writes, computed for that depth."""
    from llava_star import MethodConfig

    plan = MethodConfig.from_name("star", budget=58).plan(32)
    (k,) = [s.layer for s in plan.decoder]
    t_eq = (504 * k + 58 * (32 - k)) / 32
    assert f"'t_eq': {t_eq}" in readme_example()
