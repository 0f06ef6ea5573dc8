"""Prompt attention of the sliding layers as one Triton kernel (flash attention, GPUs).

Gemma 4's mask for a prompt's tokens there: causal, and an image's tokens see the whole
image. Torch has no kernel for that mask without materializing it, so fast_ops ran one
causal flash attention and then each image's tokens again (after copying keys and values
into flash's packed layout, and copying the images' outputs back): an 8-photo prefill on an
H200 spent ~10 ms in flash kernels and ~6 ms in those copies over its 25 sliding layers.
Here every query sees the keys before its `visible_end` (position + 1, or its image's end:
the two rules give one interval, as both start at the prompt's first key), so one pass
covers both, reading queries, keys and values in place and writing the output in the
[B, L, heads, D] layout the o projection reads. A program takes BLOCK_M rows of (query,
query head) of one KV head, so each key and value block it loads serves the head's whole
query group.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.fast_ops import visible_ends
from inference.runtime.triton_dot import INTERPRETED, dot

BLOCK_M, BLOCK_N, WARPS, STAGES = 64, 64, 8, 2


# sizes that vary per prefill unspecialized: a new pattern (== 1, multiple of 16) would
# compile the kernel again while serving
@triton.jit(do_not_specialize=["length", "total", "stride_eb"])
def _prompt_attention_kernel(
    q_ptr, k_ptr, v_ptr, ends_ptr, out_ptr,
    length, total, kv_heads, scale,
    stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl, stride_eb, stride_ob, stride_ol, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, F32: tl.constexpr,
):  # fmt: skip
    tile, pair = tl.program_id(0), tl.program_id(1)
    row, kv_head = pair // kv_heads, pair % kv_heads
    m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    query, head = m // GROUP, kv_head * GROUP + m % GROUP
    m_ok = query < length
    d = tl.arange(0, HEAD_DIM)
    row64 = row.to(tl.int64)
    q_ptrs = q_ptr + row64 * stride_qb + head[:, None] * stride_qh + query[:, None] * stride_ql
    q = tl.load(q_ptrs + d[None, :], mask=m_ok[:, None], other=0.0)
    ends = tl.load(ends_ptr + row64 * stride_eb + query, mask=m_ok, other=0)
    k_base = k_ptr + row64 * stride_kb + kv_head * stride_kh
    v_base = v_ptr + row64 * stride_vb + kv_head * stride_vh
    best = tl.full((BLOCK_M,), -float("inf"), dtype=tl.float32)
    sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    scale2 = scale * 1.4426950408889634  # exp(x) = exp2(x · log2 e)
    for first in range(0, tl.minimum(tl.max(ends, axis=0), total), BLOCK_N):
        n = first + tl.arange(0, BLOCK_N)
        n_ok = n < total
        k = tl.load(k_base + n[:, None] * stride_kl + d[None, :], mask=n_ok[:, None], other=0.0)
        scores = dot(q, tl.trans(k), tl.zeros((BLOCK_M, BLOCK_N), tl.float32), F32) * scale2
        scores = tl.where(n[None, :] < ends[:, None], scores, -float("inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        safe = tl.where(new_best == -float("inf"), 0.0, new_best)  # a padding row: nothing
        keep = tl.math.exp2(best - safe)
        p = tl.math.exp2(scores - safe[:, None])
        sums = sums * keep + tl.sum(p, axis=1)
        v = tl.load(v_base + n[:, None] * stride_vl + d[None, :], mask=n_ok[:, None], other=0.0)
        acc = dot(p.to(v.dtype), v, acc * keep[:, None], F32)
        best = new_best
    out = acc / tl.where(sums == 0.0, 1.0, sums)[:, None]
    tl.store(out_ptr + row64 * stride_ob + query[:, None] * stride_ol + head[:, None] * stride_oh
             + d[None, :], out.to(out_ptr.dtype.element_ty), mask=m_ok[:, None])  # fmt: skip


def prompt_attention(query, key, value, ends, scaling: float) -> torch.Tensor:
    """query [B, Hq, L, D] (the last L of the S key positions), key/value [B, Hkv, S, D],
    ends [B, L] (int32, fast_ops.visible_ends): query i sees the keys before ends[:, i] →
    [B, L, Hq, D]. Any strides with D innermost; D a power of 2."""
    batch, heads, length, head_dim = query.shape
    kv_heads, total = key.shape[1], key.shape[2]
    group = heads // kv_heads
    if min(t.stride(-1) for t in (query, key, value)) != 1 or head_dim & (head_dim - 1):
        raise ValueError("head_dim must be innermost and a power of 2")
    out = query.new_empty(batch, length, heads, head_dim)
    grid = (triton.cdiv(length * group, BLOCK_M), batch * kv_heads)
    _prompt_attention_kernel[grid](
        query, key, value, ends, out, length, total, kv_heads, scaling,
        query.stride(0), query.stride(1), query.stride(2), key.stride(0), key.stride(1),
        key.stride(2), value.stride(0), value.stride(1), value.stride(2),
        ends.stride(0), out.stride(0), out.stride(1), out.stride(2),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, F32=INTERPRETED,
        num_warps=WARPS, num_stages=STAGES,
    )  # fmt: skip
    return out


def reference_attention(query, key, value, ends: torch.Tensor, scaling: float) -> torch.Tensor:
    """The same attention in float32 torch, with the mask made explicit."""
    mask = torch.arange(key.shape[2], device=ends.device)[None, None, :] < ends[:, :, None]
    output = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=mask[:, None], scale=scaling,
        enable_gqa=True,
    )  # fmt: skip
    return output.transpose(1, 2)


def works_on(device: torch.device) -> bool:
    """GPUs where the kernel compiles and matches the reference at Gemma 4's sliding-layer
    sizes (16 query heads, 8 KV heads of 256) after a prefix, with an image."""
    if device.type != "cuda":
        return False
    generator = torch.Generator(device=device).manual_seed(0)
    batch, heads, kv_heads, prefix, length, dim = 2, 16, 8, 40, 100, 256
    query = torch.randn(batch, heads, length, dim, generator=generator, device=device)
    key, value = torch.randn(2, batch, kv_heads, prefix + length, dim, generator=generator,
                             device=device)  # fmt: skip
    query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
    ends = visible_ends([[(10, 50)], [(0, 30)]], prefix, length).to(device)
    got = prompt_attention(query, key, value, ends, dim**-0.5).float()
    expected = reference_attention(query, key, value, ends, dim**-0.5)
    return bool((got - expected).abs().max() <= 0.02 * expected.abs().max())
