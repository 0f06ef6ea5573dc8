"""The Triton kernels used for small decode batches on GPUs (experts, dense projections),
run by Triton's interpreter on the CPU: the experts against transformers' Gemma4TextExperts
with the tiny checkpoint's weights and router, the projections against torch's matmul.
Subprocesses, because the interpreter is chosen when Triton loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

EXPERTS = """
import json, sys, torch
from transformers import AutoModelForImageTextToText
from inference.runtime.moe_kernel import fused_experts, works_on

model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
errors = {"self_check": works_on(torch.device("cpu"))}
torch.manual_seed(0)
for index in (0, 1):
    layer = model.model.language_model.layers[index]
    experts = layer.experts
    for tokens in (1, 5):
        hidden = torch.randn(tokens, experts.hidden_dim, dtype=torch.bfloat16)
        _, weights, chosen = layer.router(hidden)
        expected = experts(hidden, chosen, weights).float()
        for blocks in (((16, 32), (16, 16)), ((16, 256), (16, 128))):
            got = fused_experts(hidden, chosen, weights, experts.gate_up_proj,
                                experts.down_proj, *blocks).float()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            errors[f"layer {index}, {tokens} tokens, blocks {blocks}"] = error
print(json.dumps(errors))
"""


def interpreted(script: str, *args: str) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fused_experts_equal_transformers_experts(tiny_model_dir: Path) -> None:
    errors = interpreted(EXPERTS, str(tiny_model_dir))
    assert errors.pop("self_check") is True
    assert len(errors) == 8
    for case, error in errors.items():
        assert error < 0.02, f"{case}: relative error {error:.4f}"


# The interpreter's tl.dot mishandles bfloat16 (numpy has none), so the projection kernel is
# checked here in float32 and float16; on a GPU `works_on` checks it in bfloat16 at start.
PROJECTIONS = """
import json, torch
from inference.runtime.gemv_kernel import skinny_linear

torch.manual_seed(0)
errors = {}
for dtype in (torch.float32, torch.float16):
    for rows, n, k in ((1, 100, 70), (5, 64, 300), (16, 33, 16), (3, 2816, 40)):
        for blocks in ((16, 32, 4), (32, 64, 4)):
            x = torch.randn(rows, 1, k, dtype=dtype)
            weight = torch.randn(n, k, dtype=dtype)
            expected = (x.float() @ weight.float().T)
            got = skinny_linear(x, weight, blocks)
            assert got.shape == (rows, 1, n) and got.dtype == dtype
            error = ((got.float() - expected).abs().max() / expected.abs().max()).item()
            errors[f"{dtype} {rows}x{k} @ {k}x{n}, blocks {blocks}"] = error
try:
    skinny_linear(torch.randn(17, 8), torch.randn(8, 8))
    errors["17 rows refused"] = False
except ValueError:
    errors["17 rows refused"] = True
print(json.dumps(errors))
"""


def test_skinny_projections_equal_torch_matmul() -> None:
    errors = interpreted(PROJECTIONS)
    assert errors.pop("17 rows refused") is True
    assert len(errors) == 16
    for case, error in errors.items():
        assert error < 0.005, f"{case}: relative error {error:.5f}"
