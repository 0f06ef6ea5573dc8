"""The Triton experts kernels (small decode batches, and the sum after grouped GEMMs for
prompts, on GPUs), run by Triton's interpreter on the CPU against transformers'
Gemma4TextExperts with the tiny checkpoint's weights and router. A subprocess, because
the interpreter is chosen when Triton loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = """
import json, sys, torch
from transformers import AutoModelForImageTextToText
from inference.runtime.moe_kernel import (
    expert_major_experts, fused_experts, grouped_experts, works_on)

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
        for blocks in (((16, 32, 4), (16, 16, 4)), ((16, 256, 4), (16, 128, 4))):
            got = fused_experts(hidden, chosen, weights, experts.gate_up_proj,
                                experts.down_proj, *blocks).float()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            errors[f"layer {index}, {tokens} tokens, blocks {blocks}"] = error
    for tokens in (23, 64):  # prompts: grouped GEMMs, then the Triton un-permute and sum
        hidden = torch.randn(tokens, experts.hidden_dim, dtype=torch.bfloat16)
        _, weights, chosen = layer.router(hidden)
        expected = experts(hidden, chosen, weights).float()
        got = grouped_experts(experts, hidden, chosen, weights).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        errors[f"layer {index}, {tokens} tokens, grouped"] = error
        # each expert once for its tokens, 16 at a time (64 tokens: ~16 per expert here)
        got = expert_major_experts(hidden, chosen, weights, experts.gate_up_proj,
                                   experts.down_proj, (16, 16, 32, 4), (16, 16, 16, 4)).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        errors[f"layer {index}, {tokens} tokens, expert-major"] = error
print(json.dumps(errors))
"""


def test_fused_experts_equal_transformers_experts(tiny_model_dir: Path) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model_dir)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert errors.pop("self_check") is True
    assert len(errors) == 16
    for case, error in errors.items():
        assert error < 0.02, f"{case}: relative error {error:.4f}"
