"""`python -m MODULE --help` in a fresh interpreter, as a user runs it, reporting which heavy
packages it imported (shared by tests/test_eval_help.py and tests_hf/test_hf_cli.py)."""
from __future__ import annotations

import subprocess
import sys
import time
from typing import List, Tuple

HEAVY = ("torch", "llava", "transformers", "matplotlib")

PROBE = """
import runpy, sys
sys.argv = [{module!r}] + {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert e.code == 0, e.code
print("HEAVY:" + ",".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def run_help(module: str, argv: List[str] = ("--help",), cwd=None) -> Tuple[subprocess.CompletedProcess, float]:
    """(the finished process, its wall seconds); its last stdout line is "HEAVY:" plus the
    heavy packages imported, comma-separated (nothing after the colon: none)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PROBE.format(module=module, argv=list(argv), heavy=HEAVY)],
                       capture_output=True, text=True, timeout=60, cwd=cwd)
    return p, time.perf_counter() - t0
