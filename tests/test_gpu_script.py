"""scripts/gpu/ (issue 16): the one-call GPU benchmark stays runnable without a GPU to try it on.
The GPU steps' command lines are parsed by the real parsers (bench's, checks.py's) so a typo in
a value only the GPU run uses fails here; a short rehearsal runs every step on the CPU."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

RUN = REPO / "scripts" / "gpu" / "run.sh"
STEPS = ("checks", "checks_all", "batch", "bench", "published")


def sh(*args, env=None, timeout=60):
    return subprocess.run(["bash", str(RUN), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def dry_run(*args):
    """Each step's command, as run.sh --dry-run prints it."""
    out = sh("--dry-run", *args, env={"OUT": "/tmp/OUT"})
    assert out.returncode == 0, out.stderr
    cmds = {}
    for line in out.stdout.splitlines():
        name, sep, rest = line.partition(":")
        if sep and name in STEPS:
            cmds[name] = shlex.split(rest)
    return cmds


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", REPO / "scripts" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scripts_are_valid_shell():
    for script in ("run.sh", "fetch_wheels.sh"):
        res = subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu" / script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr


def test_gpu_commands_parse_with_the_real_parsers():
    from llava_star.bench import build_cases, build_parser
    from llava_star.geometry import get_geometry

    cmds = dry_run()
    assert set(cmds) == set(STEPS)
    rows = {}
    for step in ("batch", "bench", "published"):
        argv = cmds[step]
        assert argv[:3] == ["python3", "-m", "llava_star.bench"], argv
        args = build_parser().parse_args(argv[3:])  # exits (SystemExit) on a bad flag or choice
        assert (args.geometry, args.device, args.dtype, args.new_tokens) == ("llava-v1.5-7b", "cuda", "float16", 32)
        skipped = []
        cases = build_cases(args.methods.split(","), [int(b) for b in args.budgets.split(",")],
                            get_geometry(args.geometry), not args.no_stock, not args.no_none, warn=skipped.append)
        assert not skipped, skipped  # every row asked for exists (run.sh sizes its repeats on the row count)
        rows[step] = [c.label for c in cases]
    assert rows["batch"] == ["none", "star@58", "fastervlm@58"]
    assert len(rows["bench"]) == 22 and {"stock", "none", "star@288", "fastv@115", "pdrop@29", "random@58"} <= set(rows["bench"])
    assert rows["published"] == ["stock", "none", "sparsevlm@192", "sparsevlm@128", "sparsevlm@64",
                                 "visionzip@192", "visionzip@128", "visionzip@64"]
    assert "--profile" in cmds["bench"] and cmds["bench"][cmds["bench"].index("--profile") + 1] in rows["bench"]
    assert cmds["batch"][cmds["batch"].index("--batch") + 1] == "8"

    from llava_star import MethodConfig

    checks = load_script("checks")
    for step in ("checks", "checks_all"):
        argv = cmds[step]
        assert argv[0] == "python3" and argv[1].endswith("scripts/gpu/checks.py")
        a = checks.parse_args(argv[2:])
        assert (a.device, a.dtype) == ("cuda", "float16")
        for name, budget in a.specs:
            MethodConfig.from_name(name, budget=budget)  # raises on an unknown method or budget
    assert checks.parse_args(cmds["checks"][2:]).specs == [("star", 58)]


def test_rehearsal_runs_the_gpu_commands_with_other_values_only():
    """Same steps, same flags in the same order; only values (and the CPU's --threads) differ."""
    gpu, cpu = dry_run(), dry_run("--rehearse")
    assert set(gpu) == set(cpu)
    flags = lambda argv: [w for w in argv if w.startswith("--") and w != "--threads"]  # noqa: E731
    for step in gpu:
        assert flags(gpu[step]) == flags(cpu[step]), step
        for flag in ("--methods", "--budgets", "--batch", "--profile"):  # what the rows are: the same
            if flag in gpu[step]:
                i, j = gpu[step].index(flag), cpu[step].index(flag)
                assert gpu[step][i + 1] == cpu[step][j + 1], (step, flag)


def test_bad_options_are_one_line_errors():
    for args, env, needle in ((["--only", "nope"], {}, "--only"), (["--repeats", "0"], {}, "--repeats"),
                              (["--deadline", "soon"], {}, "--deadline"), (["--frobnicate"], {}, "--frobnicate"),
                              ([], {"OUT": ""}, "$OUT")):
        res = sh(*args, env=env)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu" / "checks.py"), "--methods", "star58"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--methods" in res.stderr


def test_helps_do_not_import_torch(tmp_path):
    (tmp_path / "torch.py").write_text("raise ImportError('torch imported for --help')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for script in ("checks.py", "report.py"):
        res = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu" / script), "--help"], capture_output=True,
                             text=True, env=env)
        assert res.returncode == 0 and "usage" in res.stdout, res.stderr
    assert sh("--help").returncode == 0


def test_repeats_fit_the_time_left(tmp_path):
    report = load_script("report")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {"batch": 8}, "rows": [{"e2e_ms": 800.0}, {"e2e_ms": 1200.0}]}))
    def parse(rows, seconds, warmup, lo, hi):
        return report.repeats(argparse.Namespace(batch_json=str(bench), rows=rows, seconds=seconds, warmup=warmup,
                                                 min=lo, max=hi))

    assert parse(10, 100, 2, 3, 10) == 8     # 100 s / 10 rows / 1.0 s per run = 10 runs, 2 of them warm-up
    assert parse(30, 100, 2, 3, 10) == 3     # too little time: the floor
    assert parse(1, 1000, 2, 3, 10) == 10    # plenty: the cap
    bench.unlink()
    assert parse(10, 100, 2, 3, 10) == 3     # no batch times: the floor


def test_rehearsal(tmp_path):
    """The whole script on the CPU, quick: every step, its files, its summary."""
    out = tmp_path / "out"
    res = sh("--rehearse", "--quick", env={"OUT": str(out), "LLAVA_STAR_PYTHON": sys.executable}, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.md", "log.txt", "results.tar", "summary.md"]
    summary = (out / "summary.md").read_text()
    for step in ("setup", "checks", "batch", "bench", "published"):
        assert f"| {step} | 0 |" in summary, step
    assert "3 of 3 passed" in summary
    for label in ("stock", "none", "star@58", "fastv@58", "fastervlm@58", "pdrop@58", "random@58", "sparsevlm@64",
                  "visionzip@64"):
        assert f"| {label} |" in summary, label
    throughput = summary.split("## Throughput, batch 8", 1)[1]
    assert all(f"| {label} |" in throughput for label in ("none", "star@58", "fastervlm@58"))
    with tarfile.open(out / "results.tar") as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
    assert {"versions.txt", "status.tsv", "checks.json", "batch8/bench.json", "main/bench.json",
            "main/profile_star_58.txt", "published/bench.json"} <= names
    log = (out / "log.txt").read_text()
    assert "versions ok" in log and "== all steps ok" in log
    assert "steps: setup ok" in log and "batch8: questions/s none" in log  # the brief at the end
