"""The FP8 decode attention kernels (decode_attention), run by Triton's interpreter on the
CPU against float32 attention over the same stored keys and values: grouped query heads,
a mask with whole parts masked, several parts per row, head sizes not a power of 2, a
prefix kept once for all rows read before each row's own (bf16 and FP8). A
subprocess, because the interpreter is chosen when Triton loads."""

from __future__ import annotations

import pytest

from tests.inference.runtime.interpreted import assert_small, run_interpreted

pytest.importorskip("triton")

SCRIPT = """
import json, torch
from inference.runtime.kernels.decode_attention import decode_attention, reference_attention
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kv_cache import fit

torch.manual_seed(0)
errors = {}
# (rows, query heads, KV heads, positions, head size, stored dtype, prefix kept apart)
for rows, heads, kv_heads, length, dim, stored, kept in [
    (3, 4, 2, 70, 16, FP8, 0), (2, 16, 8, 100, 24, FP8, 0), (1, 2, 2, 130, 32, FP8, 0),
    (2, 4, 1, 64, 16, torch.bfloat16, 0), (3, 4, 2, 70, 16, torch.bfloat16, 64),
    (2, 16, 8, 100, 24, FP8, 128),
]:
    query = torch.randn(rows, heads, 1, dim, dtype=torch.bfloat16)
    key = fit(torch.randn(rows + 1, kv_heads, length, dim) * 2, stored)[:rows]  # slot views
    value = fit(torch.randn(rows + 1, kv_heads, length, dim), stored)[:rows]
    prefix = [fit(torch.randn(1, kv_heads, kept, dim), stored) for _ in "kv"] if kept else None
    mask = torch.rand(rows, 1, 1, kept + length) < 0.6
    mask[..., kept + 32 : kept + 64] = False  # a whole part masked
    mask[..., 0] = True
    mask[0, ..., :kept] = False  # a row that does not follow the prefix
    got = decode_attention(query, key, value, mask, 0.25, prefix).float()
    if kept:  # every row's own keys after the prefix's
        key, value = (torch.cat([p.expand(rows, -1, -1, -1), t], 2)
                      for p, t in zip(prefix, (key, value)))
    expected = reference_attention(query, key, value, mask, 0.25)
    name = f"{rows}x{heads}/{kv_heads} heads, {length} + {kept} positions, dim {dim}, {stored}"
    errors[name] = ((got - expected).abs().max() / expected.abs().max()).item()
# the engine's start-up check, as a GPU runs it
from inference.runtime.kernels.decode_attention import matches_reference
errors["start-up check"] = 0.0 if matches_reference(torch.device("cpu")) else 1.0
print(json.dumps(errors))
"""


def test_fp8_decode_attention_equals_float32_attention() -> None:
    assert_small(run_interpreted(SCRIPT), count=7)
