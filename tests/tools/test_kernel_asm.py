"""`python3 -m tools.kernel_asm` needs no GPU: the prompt kernels, compiled for Hopper,
keep their tensor-core ops and pipelined loads, and the decode step's small ones compile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_kernels_compile_for_hopper_prompt_ones_with_wgmma_and_pipelined_loads(tmp_path) -> None:
    pytest.importorskip("triton")
    out = tmp_path / "asm.json"
    done = subprocess.run(
        [sys.executable, "-m", "tools.kernel_asm", "--out", str(out)], cwd=ROOT,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    for kernel, counts in report.items():
        if kernel.startswith("prompt"):
            assert counts["wgmma.mma_async"] > 0 and counts["cp.async.cg"] > 0, kernel
        else:  # the decode step's small kernels: they compile for Hopper
            assert counts["ld.global"] > 0, kernel
        assert kernel in done.stdout
    assert {"KV write, sliding (bf16)", "router and grouping, 64 tokens"} <= set(report)
