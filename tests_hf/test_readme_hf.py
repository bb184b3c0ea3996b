"""The README's second way in (transformers' from_pretrained, the hf host) runs as written, cut
out of README.md and run in a fresh interpreter with only the checkpoint and the photo swapped:
on the tiny llava-hf LLaVA-1.5 checkpoint, and on the NeXT one with the class the comment names."""
import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO
from photos import photos

HUB_ID = '"llava-hf/llava-1.5-7b-hf"'


def second_way() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two ways in", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return block[block.index("# 2. "):]


@pytest.mark.parametrize("variant", ["llava-1.5", "llava-next"])
def test_readme_hf_example_runs(variant, tiny_hf, tiny_hf_next, tmp_path):
    code = second_way()
    assert code.count(HUB_ID) == 2 and code.count('"cat.jpg"') == 1
    path = tiny_hf if variant == "llava-1.5" else tiny_hf_next
    if variant == "llava-next":
        assert "# NeXT: LlavaNextForConditionalGeneration" in code
        code = code.replace("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration")
    photos()["chelsea"].save(tmp_path / "cat.jpg")
    code = code.replace(HUB_ID, repr(path)).replace('"cat.jpg"', repr(str(tmp_path / "cat.jpg")))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = ast.literal_eval(p.stdout.strip().splitlines()[-1])
    assert summary["final_kept"] == 58
    assert summary["visual_tokens"] == 576 if variant == "llava-1.5" else summary["visual_tokens"] > 576
