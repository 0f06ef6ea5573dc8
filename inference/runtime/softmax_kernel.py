"""The decode step's masked softmax as one Triton kernel (GPUs): a program per row of scores
(after a prefix the sliding layers keep once, one per row over its two parts).

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
from inference.runtime.fast_ops import masked_softmax_after_prefix as reference_after_prefix

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


@triton.jit
def _after_prefix_kernel(
    kept_ptr, own_ptr, mask_ptr, kept_out_ptr, own_out_ptr, kept_len, own_len, batch,
    kv_heads, group, scale2, stride_k, stride_o, stride_m, stride_ko, stride_oo,
    BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)  # of the own scores, [B, KV heads, group] in order
    sequence = row // (kv_heads * group)
    kept_row = ((row // group) % kv_heads * batch + sequence) * group + row % group
    k = tl.arange(0, BLOCK_K)
    k_ok = k < kept_len
    o = tl.arange(0, BLOCK_O)
    o_ok = o < own_len
    kept = tl.load(kept_ptr + kept_row * stride_k + k, mask=k_ok, other=0.0).to(tl.float32)
    own = tl.load(own_ptr + row * stride_o + o, mask=o_ok, other=0.0).to(tl.float32)
    kept_seen = tl.load(mask_ptr + sequence * stride_m + k, mask=k_ok, other=0) != 0
    own_seen = tl.load(mask_ptr + sequence * stride_m + kept_len + o, mask=o_ok, other=0) != 0
    kept = tl.where(kept_seen & k_ok, kept * scale2, -float("inf"))
    own = tl.where(own_seen & o_ok, own * scale2, -float("inf"))
    best = tl.maximum(tl.max(kept, axis=0), tl.max(own, axis=0))
    best = tl.where(best == -float("inf"), 0.0, best)  # a row that sees nothing: zeros
    kept = tl.math.exp2(kept - best)
    own = tl.math.exp2(own - best)
    total = tl.sum(kept, axis=0) + tl.sum(own, axis=0)
    total = tl.where(total == 0.0, 1.0, total)
    tl.store(kept_out_ptr + kept_row * stride_ko + k,
             (kept / total).to(kept_out_ptr.dtype.element_ty), mask=k_ok)  # fmt: skip
    tl.store(own_out_ptr + row * stride_oo + o, (own / total).to(own_out_ptr.dtype.element_ty),
             mask=o_ok)  # fmt: skip


def masked_softmax_after_prefix(
    kept_scores: torch.Tensor, own_scores: torch.Tensor, mask: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """fast_ops.masked_softmax_after_prefix: one row's two parts in one program, each read
    and written once where it lies (no joined copy of the scores, no transposed one of the
    kept prefix's probabilities)."""
    kv_heads, _, kept = kept_scores.shape
    batch, _, group, length = own_scores.shape
    own = own_scores.reshape(-1, length)
    seen = mask.reshape(batch, kept + length)
    if seen.stride(-1) != 1:
        seen = seen.contiguous()
    kept_out, own_out = torch.empty_like(kept_scores), torch.empty_like(own)
    block_o = triton.next_power_of_2(length)
    _after_prefix_kernel[(own.shape[0],)](
        kept_scores, own, seen.view(torch.uint8), kept_out, own_out, kept, length, batch,
        kv_heads, group, scaling * LOG2E, kept_scores.stride(1), own.stride(0), seen.stride(0),
        kept_out.stride(1), own_out.stride(0), BLOCK_K=triton.next_power_of_2(kept),
        BLOCK_O=block_o, num_warps=4 if block_o <= 1024 else 8,
    )  # fmt: skip
    return kept_out, own_out.view(own_scores.shape)


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
    # a sliding layer's after a kept prefix of 512 positions, 640 of its own
    kept = (torch.randn(8, 6, 512, generator=generator, device=device) * 8).bfloat16()
    own = (torch.randn(3, 8, 2, 640, generator=generator, device=device) * 8).bfloat16()
    mask = torch.rand(3, 1, 1, 1152, generator=generator, device=device) < 0.5
    got = masked_softmax_after_prefix(kept, own, mask, 0.1)
    expected = reference_after_prefix(kept, own, mask, 0.1)
    errors = [(a.float() - b.float()).abs().max() for a, b in zip(got, expected, strict=True)]
    return max(errors) <= 1e-2
