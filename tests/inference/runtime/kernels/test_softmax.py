"""The decode step's masked softmax kernel (softmax), run by Triton's interpreter on
the CPU against fast_ops.masked_softmax (the compiled torch version it replaces on GPUs)."""

from __future__ import annotations

import pytest

from tests.inference.runtime.interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = """
import json, torch
from inference.runtime.gemma4.fast_ops import masked_softmax
from inference.runtime.kernels.softmax import masked_softmax as kernel_softmax

torch.manual_seed(0)
result = {}
# (sequences, KV heads, queries per KV head, attended positions): a sliding layer's, a
# global one's, a length not a power of 2
for batch, heads, group, length in [(3, 8, 2, 64), (2, 2, 8, 80), (4, 1, 1, 100)]:
    scores = (torch.randn(batch, heads, group, length) * 8).to(torch.bfloat16)
    visible = torch.randint(1, length + 1, (batch, 1))
    visible[0] = 0  # a padding row of a graph's batch: it sees nothing
    mask = (torch.arange(length)[None, :] < visible)[:, None, None, :]
    got = kernel_softmax(scores, mask, 0.0625).float()
    expected = masked_softmax(scores, mask, 0.0625).float()
    name = f"{batch}x{heads}x{group}x{length}"
    result[name] = (got[1:] - expected[1:]).abs().max().item()
    result[name + " sums"] = (got[1:].sum(-1) - 1).abs().max().item()
    result[name + " unseen"] = got[1:].masked_select(~mask[1:]).abs().max().item()
    result[name + " empty row"] = got[0].abs().max().item()
print(json.dumps(result))
"""


def test_masked_softmax_kernel_equals_torch() -> None:
    result = run_interpreted(SCRIPT)
    assert len(result) == 12, result
    for case, value in result.items():
        bound = 0.0 if case.endswith(("unseen", "empty row")) else 1e-2
        assert value <= bound, f"{case}: {value}"


AFTER_PREFIX = """
import json, torch
from inference.runtime.gemma4.fast_ops import masked_softmax_after_prefix
from inference.runtime.kernels.softmax import masked_softmax_after_prefix as kernel_softmax

torch.manual_seed(1)
result = {}
# (sequences, KV heads, queries per KV head, kept prefix positions, own positions)
for batch, heads, group, kept, length in [(3, 8, 2, 64, 80), (2, 2, 3, 128, 64)]:
    kept_scores = (torch.randn(heads, batch * group, kept) * 8).to(torch.bfloat16)
    own_scores = (torch.randn(batch, heads, group, length) * 8).to(torch.bfloat16)
    mask = torch.rand(batch, 1, 1, kept + length) < 0.5
    mask[0] = False  # a padding row: it sees nothing
    mask[1, ..., :kept] = False  # a row that does not follow the kept prefix
    got = kernel_softmax(kept_scores, own_scores, mask, 0.0625)
    expected = masked_softmax_after_prefix(kept_scores, own_scores, mask, 0.0625)
    name = f"{batch}x{heads}x{group}, {kept} + {length}"
    by_row = [got[0].view(heads, batch, group, kept).transpose(0, 1), got[1]]
    expected = [expected[0].view(heads, batch, group, kept).transpose(0, 1), expected[1]]
    for part, a, b in zip(("kept", "own"), by_row, expected):
        result[f"{name} {part}"] = (a[1:].float() - b[1:].float()).abs().max().item()
    result[name + " empty row"] = max(a[0].abs().max().item() for a in by_row)
print(json.dumps(result))
"""


def test_the_softmax_over_a_kept_prefix_and_own_positions_equals_torch() -> None:
    result = run_interpreted(AFTER_PREFIX)
    assert len(result) == 6, result
    for case, value in result.items():
        assert value <= (0.0 if case.endswith("empty row") else 1e-2), f"{case}: {value}"
