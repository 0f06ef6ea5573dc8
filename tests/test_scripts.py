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


@pytest.mark.parametrize("script", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_script_imports(script: str) -> None:
    done = run(f"import {script}")
    assert done.returncode == 0, done.stderr[-2000:]


def test_prompt_kernels_compile_for_hopper_with_wgmma_and_pipelined_loads(tmp_path) -> None:
    pytest.importorskip("triton")
    out = tmp_path / "asm.json"
    done = run("import runpy; runpy.run_path('scripts/kernel_asm.py', run_name='__main__')",
               "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for kernel, counts in json.loads(out.read_text()).items():
        assert counts["wgmma.mma_async"] > 0 and counts["cp.async.cg"] > 0, kernel
