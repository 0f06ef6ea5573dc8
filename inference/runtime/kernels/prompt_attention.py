"""Prompt attention as one Triton kernel (flash attention, GPUs): sliding and global layers.

Gemma 4's mask for a prompt's tokens there: causal, and an image's tokens see the whole
image. Torch has no kernel for that mask without materializing it, so fast_ops ran one
causal flash attention and then each image's tokens again (after copying keys and values
into flash's packed layout, and copying the images' outputs back): two passes over the
images' tokens, and copies nearly as long as the flash kernels (docs/performance.md).
Here every query sees the keys before its `visible_end` (position + 1, or its image's end:
the two rules give one interval, as both start at the prompt's first key), so one pass
covers both, reading queries, keys and values in place and writing the output in the
[B, L, heads, D] layout the o projection reads. A program takes BLOCK_M rows of (query,
query head) of one KV head, so each key and value block it loads serves the head's whole
query group. The global layers' prompts are causal (no image rule in Gemma 4): the same
kernel with each query's end computed (SDPA took them with transformers' mask). Prompts
longer than a sliding layer's window (a conversation's follow-up) start each query's keys
at its position - window + 1 (SDPA with transformers' mask took those too).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.gemma4.fast_ops import visible_ends
from inference.runtime.kernels.dot import INTERPRETED, dot

# (BLOCK_M, BLOCK_N, warps, stages) by head size: 128-row tiles for the sliding layers, as
# timed on an 8-photo prefill by tools.check_kernels prompt-attention (docs/performance.md)
BLOCKS = {256: (128, 64, 8, 2), 512: (64, 32, 8, 2)}


@triton.jit
def _attend(q, firsts, ends, best, sums, acc, k_base, v_base, stride_kl, stride_vl, start,
            first, stop, d, d_ok, scale2, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            WINDOWED: tl.constexpr, F32: tl.constexpr):  # fmt: skip
    """Online softmax over the keys at positions [first, stop), stored from `start` on;
    `WINDOWED`: each query's from its `firsts` on."""
    for block in range(first, stop, BLOCK_N):
        n = block + tl.arange(0, BLOCK_N)
        n_ok = n < stop
        kv_ok = n_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + (n - start)[:, None] * stride_kl + d[None, :], mask=kv_ok, other=0.0)
        scores = dot(q, tl.trans(k), tl.zeros((BLOCK_M, BLOCK_N), tl.float32), F32) * scale2
        seen = (n[None, :] < ends[:, None]) & n_ok[None, :]
        if WINDOWED:
            seen = seen & (n[None, :] >= firsts[:, None])
        scores = tl.where(seen, scores, -float("inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        safe = tl.where(new_best == -float("inf"), 0.0, new_best)  # a padding row: nothing
        keep = tl.math.exp2(best - safe)
        p = tl.math.exp2(scores - safe[:, None])
        sums = sums * keep + tl.sum(p, axis=1)
        v = tl.load(v_base + (n - start)[:, None] * stride_vl + d[None, :], mask=kv_ok, other=0.0)
        acc = dot(p.to(v.dtype), v, acc * keep[:, None], F32)
        best = new_best
    return best, sums, acc


# sizes that vary per prefill unspecialized: a new pattern (== 1, multiple of 16) would
# compile the kernel again while serving
@triton.jit(do_not_specialize=["length", "prefix", "total", "stride_eb"])
def _prompt_attention_kernel(
    q_ptr, k_ptr, v_ptr, pk_ptr, pv_ptr, ends_ptr, out_ptr,
    length, prefix, total, window, kv_heads, scale,
    stride_qb, stride_qh, stride_ql, stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl, stride_pkb, stride_pkh, stride_pkl,
    stride_pvb, stride_pvh, stride_pvl, stride_eb, stride_ob, stride_ol, stride_oh,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, F32: tl.constexpr,
):  # fmt: skip
    tile, pair = tl.program_id(0), tl.program_id(1)
    row, kv_head = pair // kv_heads, pair % kv_heads
    m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    query, head = m // GROUP, kv_head * GROUP + m % GROUP
    m_ok = query < length
    d = tl.arange(0, BLOCK_D)  # HEAD_DIM padded to a power of 2
    # not padded: a constant mask, folded away
    d_ok = tl.full((BLOCK_D,), 1, tl.int1) if BLOCK_D == HEAD_DIM else d < HEAD_DIM
    row64 = row.to(tl.int64)
    q_ptrs = q_ptr + row64 * stride_qb + head[:, None] * stride_qh + query[:, None] * stride_ql
    q = tl.load(q_ptrs + d[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    if CAUSAL:  # no images: each query sees the keys up to its own position
        ends = tl.where(m_ok, total - length + query + 1, 0)
    else:
        ends = tl.load(ends_ptr + row64 * stride_eb + query, mask=m_ok, other=0)
    best = tl.full((BLOCK_M,), -float("inf"), dtype=tl.float32)
    sums = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    scale2 = scale * 1.4426950408889634  # exp(x) = exp2(x · log2 e)
    stop = tl.minimum(tl.max(ends, axis=0), total)
    # a sliding layer's window: the keys after position - window (the image rule too)
    firsts = tl.maximum(total - length + query - window + 1, 0)
    first = tl.min(tl.where(m_ok, firsts, total), axis=0) if WINDOWED else 0
    # the shared prefix's keys (positions before `prefix`), then the prompts' own
    best, sums, acc = _attend(
        q, firsts, ends, best, sums, acc, pk_ptr + row64 * stride_pkb + kv_head * stride_pkh,
        pv_ptr + row64 * stride_pvb + kv_head * stride_pvh, stride_pkl, stride_pvl, 0, first,
        tl.minimum(stop, prefix), d, d_ok, scale2, BLOCK_M, BLOCK_N, WINDOWED, F32,
    )  # fmt: skip
    best, sums, acc = _attend(
        q, firsts, ends, best, sums, acc, k_ptr + row64 * stride_kb + kv_head * stride_kh,
        v_ptr + row64 * stride_vb + kv_head * stride_vh, stride_kl, stride_vl, prefix,
        tl.maximum(first, prefix), stop, d, d_ok, scale2, BLOCK_M, BLOCK_N, WINDOWED, F32,
    )  # fmt: skip
    out = acc / tl.where(sums == 0.0, 1.0, sums)[:, None]
    tl.store(out_ptr + row64 * stride_ob + query[:, None] * stride_ol + head[:, None] * stride_oh
             + d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])  # fmt: skip


def prompt_attention(
    query, key, value, ends, scaling: float, prefix=None, window: int = 0
) -> torch.Tensor:
    """query [B, Hq, L, D] (the last L of the S key positions), key/value [B, Hkv, S, D],
    ends [B, L] (int32, fast_ops.visible_ends): query i sees the keys before ends[:, i]
    (None: causal) → [B, L, Hq, D]. Any strides with D innermost. `prefix`: the first P
    key positions' keys and values apart ([1 or B, Hkv, P, D] each, read by every row);
    key/value then hold the S - P after them. `window`: a sliding layer's, whose queries
    see only the keys after their position - window (transformers' sliding_window_overlay,
    over the image rule too)."""
    batch, heads, length, head_dim = query.shape
    kv_heads = key.shape[1]
    prefix_key, prefix_value = prefix if prefix is not None else (key[:, :, :0], value[:, :, :0])
    before = prefix_key.shape[2]
    total = before + key.shape[2]
    group = heads // kv_heads
    tensors = (query, key, value, prefix_key, prefix_value)
    if min(t.stride(-1) for t in tensors) != 1:
        raise ValueError("head_dim must be the innermost dimension")
    out = query.new_empty(batch, length, heads, head_dim)
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_m, block_n, warps, stages = BLOCKS.get(block_d, BLOCKS[512])
    grid = (triton.cdiv(length * group, block_m), batch * kv_heads)
    shared = [0 if t.shape[0] == 1 else t.stride(0) for t in (prefix_key, prefix_value)]
    _prompt_attention_kernel[grid](
        query, key, value, prefix_key, prefix_value, out if ends is None else ends, out,
        length, before, total, window, kv_heads, scaling, query.stride(0), query.stride(1),
        query.stride(2), key.stride(0), key.stride(1), key.stride(2), value.stride(0),
        value.stride(1), value.stride(2), shared[0], prefix_key.stride(1), prefix_key.stride(2),
        shared[1], prefix_value.stride(1), prefix_value.stride(2),
        0 if ends is None else ends.stride(0), out.stride(0), out.stride(1), out.stride(2),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_N=block_n,
        CAUSAL=ends is None, WINDOWED=0 < window < total, F32=INTERPRETED, num_warps=warps,
        num_stages=stages,
    )  # fmt: skip
    return out


def reference_attention(query, key, value, ends, scaling: float, window: int = 0):
    """The same attention in float32 torch, with the mask made explicit."""
    if ends is None:
        ends = visible_ends([[]] * query.shape[0], key.shape[2] - query.shape[2], query.shape[2])
    ends = ends.to(query.device)
    keys = torch.arange(key.shape[2], device=ends.device)
    mask = keys[None, None, :] < ends[:, :, None]
    if window:
        queries = keys[key.shape[2] - query.shape[2] :]
        mask &= (keys[None, :] > queries[:, None] - window)[None]
    output = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=mask[:, None], scale=scaling,
        enable_gqa=True,
    )  # fmt: skip
    return output.transpose(1, 2)


def works_on(device: torch.device) -> bool:
    """GPUs where the kernel compiles and matches the reference at Gemma 4's sizes: a
    sliding layer (16 query heads, 8 KV heads of 256) with an image, within its window and
    past it, a global one (2 KV heads of 512) causal, all after a prefix, given joined to
    the prompts' keys and apart."""
    if device.type != "cuda":
        return False
    generator = torch.Generator(device=device).manual_seed(0)
    batch, heads, prefix, length = 2, 16, 40, 100
    spans = visible_ends([[(10, 50)], [(0, 30)]], prefix, length).to(device)
    for kv_heads, dim, ends, window in ((8, 256, spans, 0), (8, 256, spans, 64), (2, 512, None, 0)):
        query = torch.randn(batch, heads, length, dim, generator=generator, device=device)
        key, value = torch.randn(2, batch, kv_heads, prefix + length, dim, generator=generator,
                                 device=device)  # fmt: skip
        query, key, value = (t.to(torch.bfloat16) for t in (query, key, value))
        key[1:, :, :prefix], value[1:, :, :prefix] = key[:1, :, :prefix], value[:1, :, :prefix]
        expected = reference_attention(query, key, value, ends, dim**-0.5, window)
        apart = (key[:1, :, :prefix], value[:1, :, :prefix])
        for got in (
            prompt_attention(query, key, value, ends, dim**-0.5, None, window),
            prompt_attention(query, key[:, :, prefix:], value[:, :, prefix:], ends, dim**-0.5,
                             apart, window),
        ):  # fmt: skip
            if not (got.float() - expected).abs().max() <= 0.02 * expected.abs().max():
                return False
    return True
