"""`python3 -m tools.check_kernels` on the CPU: every family, under Triton's interpreter at
the tiny checkpoint's sizes, writes its rows with each kernel's and each torch path's error
under bf16's rounding; a sweep lists its tiles' times and leaves the kernel's tiles as they
were. One subprocess for all (the interpreter is chosen when Triton loads; torch loads once)."""

from __future__ import annotations

import pytest

from tests.inference.runtime.interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = """
import json, sys
from pathlib import Path
from inference.runtime.kernels import prompt_attention
from tools.check_kernels.__main__ import FAMILIES, main

blocks = dict(prompt_attention.BLOCKS)
out, rows = Path(sys.argv[1]), {}
for family in FAMILIES:
    sizes = "40" if family == "prompt-experts" else "2"
    sweep = ["--sweep"] if family == "prompt-attention" else []
    assert main([family, "--tiny", "--device", "cpu", "--sizes", sizes, *sweep,
                 "--out", str(out / family)]) == 0
    rows[family] = json.loads((out / family).read_text())["rows"]
print(json.dumps({"rows": rows, "blocks kept": prompt_attention.BLOCKS == blocks}))
"""


def test_each_family_runs_interpreted_with_errors_under_bf16_rounding(tmp_path) -> None:
    report = run_interpreted(SCRIPT, str(tmp_path))
    assert report["blocks kept"]
    rows = report["rows"]
    assert set(rows) == {"experts", "prompt-experts", "decode-attention", "softmax",
                         "prompt-attention"}  # fmt: skip
    kernel_errors = 0
    for family, (row,) in rows.items():
        errors = {k: v for k, v in row.items() if k.endswith(" error")}
        assert errors and all(0 <= error < 0.02 for error in errors.values()), (family, errors)
        kernel_errors += sum("kernel" in k or "per-pair" in k or "triton" in k for k in errors)
        for name in (k.removesuffix(" error") for k in errors):  # each way timed
            assert row.get(f"{name} ms", row.get(f"{name} µs", 0)) > 0, (family, name)
    assert kernel_errors >= 12  # each family's kernels were among the ways
    for layer in ("sliding", "global"):
        (timings,) = [v for k, v in rows["prompt-attention"][0].items()
                      if k.startswith(f"sweep {layer}")]  # fmt: skip
        assert len(timings) == 4 and timings == sorted(timings)
