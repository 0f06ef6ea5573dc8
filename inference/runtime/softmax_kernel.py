"""The decode step's masked softmax as one Triton kernel (GPUs): a program per row of scores.

Between the two matmuls of bf16 decode attention (fast_ops.decode_attention) each layer
turns its scores [B, KV heads, group, L] into probabilities over the positions its mask
lets the sequence see. torch.compile made that one kernel, but one that splits each row's
reduction over several programs: 12.8 µs a layer at 64 sequences on an H200 (0.385 ms of
an 18.4 ms step) for ~4 MB read and written. Here each program holds its whole row (L ≤
4,096, the longest attended length) in registers: one read, one write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.fast_ops import masked_softmax as reference_softmax

LOG2E = 1.4426950408889634


@triton.jit
def _masked_softmax_kernel(
    scores_ptr, mask_ptr, out_ptr, length, rows_per_sequence, scale2, stride_s, stride_m,
    stride_o, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    sequence = row // rows_per_sequence
    n = tl.arange(0, BLOCK)
    n_ok = n < length
    scores = tl.load(scores_ptr + row * stride_s + n, mask=n_ok, other=0.0).to(tl.float32)
    seen = tl.load(mask_ptr + sequence * stride_m + n, mask=n_ok, other=0) != 0
    logits = tl.where(seen & n_ok, scores * scale2, -float("inf"))
    best = tl.max(logits, axis=0)
    best = tl.where(best == -float("inf"), 0.0, best)  # a row that sees nothing: zeros
    p = tl.math.exp2(logits - best)
    total = tl.sum(p, axis=0)
    p = p / tl.where(total == 0.0, 1.0, total)
    tl.store(out_ptr + row * stride_o + n, p.to(out_ptr.dtype.element_ty), mask=n_ok)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """fast_ops.masked_softmax: scores [B, H, G, L], mask [B, 1, 1, L] (bool) → softmax of
    scores · scaling over the positions the mask keeps, in float32, in the scores' dtype."""
    batch, heads, group, length = scores.shape
    rows = scores.reshape(-1, length)  # a view for the matmul's output
    seen = mask.reshape(batch, length)
    if seen.stride(-1) != 1:
        seen = seen.contiguous()
    out = torch.empty_like(rows)
    block = triton.next_power_of_2(length)
    _masked_softmax_kernel[(rows.shape[0],)](
        rows, seen.view(torch.uint8), out, length, heads * group, scaling * LOG2E,
        rows.stride(0), seen.stride(0), out.stride(0), BLOCK=block,
        num_warps=4 if block <= 1024 else 8,
    )  # fmt: skip
    return out.view(scores.shape)


def works_on(device: torch.device) -> bool:
    """GPUs where the kernel compiles and matches torch at the decode step's sizes: a
    sliding layer's (8 KV heads, 2 queries each, 1,024 positions) and a global one's (2 KV
    heads, 8 queries each, 1,280), rows seeing part of their positions."""
    if device.type != "cuda":
        return False
    generator = torch.Generator(device=device).manual_seed(0)
    for heads, group, length in ((8, 2, 1024), (2, 8, 1280)):
        scores = torch.randn(3, heads, group, length, generator=generator, device=device)
        scores = (scores * 8).to(torch.bfloat16)
        mask = torch.arange(length, device=device) < torch.tensor([[1], [700], [length]],
                                                                  device=device)  # fmt: skip
        mask = mask[:, None, None, :]
        got, expected = masked_softmax(scores, mask, 0.1), reference_softmax(scores, mask, 0.1)
        if not (got.float() - expected.float()).abs().max() <= 1e-2:
            return False
    return True
