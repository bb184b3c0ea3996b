"""The hf tools' command lines: fast --help (no torch / transformers import), one-line errors."""
import re
import subprocess
import sys

import pytest

from conftest import REPO
from help_probe import run_help

@pytest.mark.parametrize("module", ["llava_star.tiny_hf", "llava_star.convert_hf"])
def test_help_imports_nothing_heavy(module):
    out, _ = run_help(module, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:"


def test_convert_refuses_bad_sources_in_one_line(tmp_path, tiny_hf):
    for src, message in ((tmp_path / "nothing", "has no config.json"),
                         (tiny_hf, "model_type 'llava'; only llava-torch checkpoints \\(llava_llama, llava_mistral\\)")):
        out = subprocess.run([sys.executable, "-m", "llava_star.convert_hf", str(src), str(tmp_path / "dst")],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and "llava_star.convert_hf: error:" in out.stderr
        assert re.search(message, out.stderr), out.stderr
