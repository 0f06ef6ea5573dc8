"""The GPU scripts under scripts/ stay importable (they run on a GPU machine only, so an
import is what CI can check), and the one that needs no GPU runs: the prompt kernels,
compiled for Hopper, keep their tensor-core ops and pipelined loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
ROOT = SCRIPTS.parent


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    env_path = f"{ROOT}:{SCRIPTS}"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": env_path}, cwd=ROOT, check=False,
    )  # fmt: skip


def test_every_script_imports() -> None:
    """One interpreter for all (each alone would load torch again: ~4 s apiece)."""
    scripts = sorted(p.stem for p in SCRIPTS.glob("*.py"))
    done = run(
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=2))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n",
        *scripts,
    )
    assert len(scripts) > 10
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_kernels_compile_for_hopper_prompt_ones_with_wgmma_and_pipelined_loads(tmp_path) -> None:
    pytest.importorskip("triton")
    out = tmp_path / "asm.json"
    done = run("import runpy; runpy.run_path('scripts/kernel_asm.py', run_name='__main__')",
               "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    for kernel, counts in report.items():
        if kernel.startswith("prompt"):
            assert counts["wgmma.mma_async"] > 0 and counts["cp.async.cg"] > 0, kernel
        else:  # the decode step's small kernels: they compile for Hopper
            assert counts["ld.global"] > 0, kernel
    assert {"KV write, sliding (bf16)", "router and grouping, 64 tokens"} <= set(report)


def test_greedy_token_comparison_names_each_sequence_that_parts(tmp_path) -> None:
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps({"bf16": [[1, 2, 3], [4, 5, 6]], "fp8": [[7, 8]]}))
    after.write_text(json.dumps({"bf16": [[1, 2, 3], [4, 9, 6]], "fp8": [[7, 8]]}))
    done = run("import runpy; runpy.run_path('scripts/gpu_greedy_tokens.py', run_name='__main__')",
               "--compare", str(before), str(after))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"bf16": [[1, 1]], "fp8": []}
