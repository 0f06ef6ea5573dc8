"""The decode step's masked softmax as one Triton kernel (GPUs): a program per row of scores
(after a prefix the sliding layers keep once, one per row over its two parts).

Between the two matmuls of bf16 decode attention (fast_ops.decode_attention) each layer
turns its scores [B, KV heads, group, L] into probabilities over the positions its mask
lets the sequence see. torch.compile made that one kernel, but one that splits each row's
reduction over several programs, which read and write the row more than once
(docs/performance.md). Here each program holds its whole row (L ≤ 4,096, the longest
attended length) in registers: one read, one write.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.gemma4.fast_ops import masked_softmax as reference_softmax
from inference.runtime.gemma4.fast_ops import masked_softmax_after_prefix as reference_after_prefix

LOG2E = 1.4426950408889634


@triton.jit
def _masked_softmax_kernel(
    own_ptr, mask_ptr, own_out_ptr, kept_ptr, kept_out_ptr, own_len, kept_len, batch,
    kv_heads, group, scale2, stride_o, stride_m, stride_oo, stride_k, stride_ko,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, KEPT: tl.constexpr,
):  # fmt: skip
    """A row of scores [B, KV heads, group] per program; with KEPT, the row's part over
    the kept prefix too (kept scores [KV heads, B·group, kept_len], mask positions first)."""
    row = tl.program_id(0)
    sequence = row // (kv_heads * group)
    o = tl.arange(0, BLOCK_O)
    o_ok = o < own_len
    own = tl.load(own_ptr + row * stride_o + o, mask=o_ok, other=0.0).to(tl.float32)
    own_seen = tl.load(mask_ptr + sequence * stride_m + kept_len + o, mask=o_ok, other=0) != 0
    own = tl.where(own_seen & o_ok, own * scale2, -float("inf"))
    best = tl.max(own, axis=0)
    if KEPT:
        kept_row = ((row // group) % kv_heads * batch + sequence) * group + row % group
        k = tl.arange(0, BLOCK_K)
        k_ok = k < kept_len
        kept = tl.load(kept_ptr + kept_row * stride_k + k, mask=k_ok, other=0.0).to(tl.float32)
        kept_seen = tl.load(mask_ptr + sequence * stride_m + k, mask=k_ok, other=0) != 0
        kept = tl.where(kept_seen & k_ok, kept * scale2, -float("inf"))
        best = tl.maximum(best, tl.max(kept, axis=0))
    best = tl.where(best == -float("inf"), 0.0, best)  # a row that sees nothing: zeros
    own = tl.math.exp2(own - best)
    total = tl.sum(own, axis=0)
    if KEPT:
        kept = tl.math.exp2(kept - best)
        total += tl.sum(kept, axis=0)
    total = tl.where(total == 0.0, 1.0, total)
    tl.store(own_out_ptr + row * stride_oo + o, (own / total).to(own_out_ptr.dtype.element_ty),
             mask=o_ok)  # fmt: skip
    if KEPT:
        tl.store(kept_out_ptr + kept_row * stride_ko + k,
                 (kept / total).to(kept_out_ptr.dtype.element_ty), mask=k_ok)  # fmt: skip


def _softmax_rows(own_scores, mask, scaling: float, kept_scores=None):
    """The kernel over own scores [B, H, G, L] (and kept ones [H, B·G, P]): probabilities
    in the same layouts."""
    batch, heads, group, length = own_scores.shape
    kept = kept_scores.shape[2] if kept_scores is not None else 0
    own = own_scores.reshape(-1, length)  # a view for the matmul's output
    seen = mask.reshape(batch, kept + length)
    if seen.stride(-1) != 1:
        seen = seen.contiguous()
    own_out = torch.empty_like(own)
    kept_in, kept_out = (own, own_out) if kept_scores is None else (
        kept_scores, torch.empty_like(kept_scores))  # fmt: skip
    block_o = triton.next_power_of_2(length)
    _masked_softmax_kernel[(own.shape[0],)](
        own, seen.view(torch.uint8), own_out, kept_in, kept_out, length, kept, batch, heads,
        group, scaling * LOG2E, own.stride(0), seen.stride(0), own_out.stride(0),
        kept_in.stride(-2), kept_out.stride(-2), BLOCK_O=block_o,
        BLOCK_K=triton.next_power_of_2(max(kept, 1)), KEPT=kept_scores is not None,
        num_warps=4 if block_o <= 1024 else 8,
    )  # fmt: skip
    return own_out.view(own_scores.shape), kept_out if kept_scores is not None else None


def masked_softmax_after_prefix(
    kept_scores: torch.Tensor, own_scores: torch.Tensor, mask: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """fast_ops.masked_softmax_after_prefix: one row's two parts in one program, each read
    and written once where it lies (no joined copy of the scores, no transposed one of the
    kept prefix's probabilities)."""
    own, kept = _softmax_rows(own_scores, mask, scaling, kept_scores)
    return kept, own


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """fast_ops.masked_softmax: scores [B, H, G, L], mask [B, 1, 1, L] (bool) → softmax of
    scores · scaling over the positions the mask keeps, in float32, in the scores' dtype."""
    return _softmax_rows(scores, mask, scaling)[0]


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
    # a sliding layer's after a kept prefix of 512 positions, 640 of its own
    kept = (torch.randn(8, 6, 512, generator=generator, device=device) * 8).bfloat16()
    own = (torch.randn(3, 8, 2, 640, generator=generator, device=device) * 8).bfloat16()
    mask = torch.rand(3, 1, 1, 1152, generator=generator, device=device) < 0.5
    got = masked_softmax_after_prefix(kept, own, mask, 0.1)
    expected = reference_after_prefix(kept, own, mask, 0.1)
    errors = [(a.float() - b.float()).abs().max() for a, b in zip(got, expected, strict=True)]
    return max(errors) <= 1e-2
