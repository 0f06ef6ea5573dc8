"""A decode step's keys and values written by one kernel (kv_write), run by Triton's
interpreter on the CPU against SlotKVCache's indexed assignments: sliding and global layer
shapes, rows to slots out of order and a padding row to the scratch slot; with FP8 sliding
layers (the kernel writes the bf16 global ones only)."""

from __future__ import annotations

import pytest

from tests.inference.runtime.interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = """
import json, torch
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kv_cache import LayerSpec, SlotKVCache
from inference.runtime.kernels.kv_write import write

torch.manual_seed(0)
result = {}
layers = [LayerSpec(True, 4, 16), LayerSpec(False, 2, 24)]  # 24: not a power of 2
for sliding_dtype in (None, FP8):
    caches = [SlotKVCache(layers, max_slots=4, max_seq_len=40, window=16,
                          dtype=torch.bfloat16, device=torch.device("cpu"),
                          sliding_dtype=sliding_dtype) for _ in range(2)]
    calls = []
    caches[1].write_step = lambda *args: (calls.append(1), write(*args))
    step = caches[0].step_inputs([20, 3, 37, 0], [2, 0, 1, 4])  # row 3: padding, scratch slot
    for cache in caches:
        cache.step[:, :4] = step
    for layer, spec in enumerate(layers):
        key = torch.randn(4, spec.num_kv_heads, 1, spec.head_dim).to(torch.bfloat16)
        value = torch.randn_like(key)
        key[0, 0, 0, 0] = 1000.0
        for cache in caches:
            cache.update(key, value, layer)
    name = "fp8" if sliding_dtype else "bf16"
    result[f"{name} kernel calls"] = len(calls)
    for layer in range(len(layers)):
        for part in ("keys", "values"):
            expected, got = (getattr(c, part)[layer].float() for c in caches)
            result[f"{name} layer {layer} {part}"] = torch.equal(got, expected)
            result[f"{name} layer {layer} {part} written"] = bool(got.abs().sum() > 0)
print(json.dumps(result))
"""


def test_the_kernel_writes_what_indexed_assignment_does() -> None:
    result = run_interpreted(SCRIPT)
    # every layer through the kernel; with FP8 sliding layers only the global one
    assert result.pop("bf16 kernel calls") == 2 and result.pop("fp8 kernel calls") == 1
    assert len(result) == 16 and all(result.values()), result
