"""Decode attention over keys and values stored as FP8 (e4m3), as Triton kernels (opt-in:
`RuntimeConfig.fp8_kv_cache`, for the sliding layers).

A decode step of many sequences reads the sliding layers' whole 1,024-position rings: most
of what it reads besides the experts, half of that in FP8. Torch cannot multiply FP8 by
bf16, and converting the ring first would read it twice, so the kernels convert as they
load (flash decoding):
  1. one program per (sequence, KV head, part of the positions): the KV head's queries
     (padded to 16 rows) against its keys on float16 tensor cores (e4m3 converts to float16
     in one instruction, and float16 keeps more of the query than bf16), the mask applied,
     an online softmax in float32, the values weighted and summed; each part keeps its
     running max, sum and output;
  2. one program per (sequence, query head) merges the parts (where there is more than
     one: at 64 sequences the 512 (sequence, KV head) programs are enough on their own).
Faster than the bf16 matmuls at 1, 8 and 64 sequences (docs/performance.md). The values
are stored as they are (one scale, 1: Gemma 4's keys and values come out of RMS norms, so
they are small); `kv_cache.fit` clamps them to FP8's range first.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.kernels.dot import INTERPRETED, dot

# tiles and grid, swept at 1, 8 and 64 rows by tools.check_kernels decode-attention
# (docs/performance.md)
BLOCK_L = 64  # positions per loop step
MIN_PROGRAMS = 512  # programs per call at least (a few per SM), where the ring allows
WARPS, STAGES = 4, 3


@triton.jit
def _parts_kernel(
    q_ptr, k_ptr, v_ptr, kept_k_ptr, kept_v_ptr, mask_ptr, out_ptr, max_ptr, sum_ptr,
    length, kept, part_len, num_parts, scale,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_kl, stride_vb, stride_vh, stride_vl,
    stride_ph, stride_pl, stride_mb,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_L: tl.constexpr, ONE_PART: tl.constexpr, F32: tl.constexpr, SKIP_EMPTY: tl.constexpr,
):  # fmt: skip
    row, kv_head, part = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g = tl.arange(0, BLOCK_G)  # the KV head's query heads, padded to a tensor-core tile
    g_ok = g < GROUP
    heads = kv_head * GROUP + g
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    q = tl.load(q_ptr + row * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=g_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float16)  # fmt: skip
    k_base = k_ptr + row.to(tl.int64) * stride_kb + kv_head * stride_kh
    v_base = v_ptr + row.to(tl.int64) * stride_vb + kv_head * stride_vh
    kept_k = kept_k_ptr + kv_head * stride_ph  # the prefix kept once for all rows
    kept_v = kept_v_ptr + kv_head * stride_ph
    best = tl.full((BLOCK_G,), -float("inf"), dtype=tl.float32)
    total = tl.zeros((BLOCK_G,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), dtype=tl.float32)
    start = part * part_len
    end = tl.minimum(start + part_len, length)
    for first in range(start, end, BLOCK_L):
        pos = first + tl.arange(0, BLOCK_L)
        ok = pos < end
        attend = tl.load(mask_ptr + row * stride_mb + pos, mask=ok, other=0) != 0
        if not SKIP_EMPTY or tl.max(attend.to(tl.int32), axis=0) > 0:  # blocks seen
            # positions below `kept` are the kept prefix's (whole blocks), the others the row's
            in_kept, own = first < kept, pos - kept
            k_rows = tl.where(in_kept, kept_k + pos * stride_pl, k_base + own * stride_kl)
            v_rows = tl.where(in_kept, kept_v + pos * stride_pl, v_base + own * stride_vl)
            k = tl.load(k_rows[:, None] + d[None, :],
                        mask=ok[:, None] & d_ok[None, :], other=0.0).to(tl.float16)  # fmt: skip
            v = tl.load(v_rows[:, None] + d[None, :],
                        mask=ok[:, None] & d_ok[None, :], other=0.0).to(tl.float16)  # fmt: skip
            scores = dot(q, tl.trans(k), tl.zeros((BLOCK_G, BLOCK_L), tl.float32), F32) * scale
            scores = tl.where(attend[None, :], scores, -float("inf"))
            new_best = tl.maximum(best, tl.max(scores, axis=1))
            safe = tl.where(new_best == -float("inf"), 0.0, new_best)  # all masked so far
            keep = tl.exp(best - safe)
            p = tl.exp(scores - safe[:, None])
            total = total * keep + tl.sum(p, axis=1)
            acc = dot(p.to(tl.float16), v, acc * keep[:, None], F32)
            best = new_best
    slot = (row * (GROUP * tl.num_programs(1)) + heads) * num_parts + part
    if ONE_PART:  # the answer itself: no merge
        out = acc / total[:, None]
        tl.store(out_ptr + slot[:, None] * HEAD_DIM + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])  # fmt: skip
    else:
        tl.store(out_ptr + slot[:, None] * HEAD_DIM + d[None, :], acc,
                 mask=g_ok[:, None] & d_ok[None, :])  # fmt: skip
        tl.store(max_ptr + slot, best, mask=g_ok)
        tl.store(sum_ptr + slot, total, mask=g_ok)


@triton.jit
def _merge_kernel(parts_ptr, max_ptr, sum_ptr, out_ptr, num_parts, HEAD_DIM: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr):  # fmt: skip
    head = tl.program_id(0)  # over sequences × query heads
    p = tl.arange(0, BLOCK_P)
    p_ok = p < num_parts
    best = tl.load(max_ptr + head * num_parts + p, mask=p_ok, other=-float("inf"))
    top = tl.max(best, axis=0)
    weight = tl.where(best == -float("inf"), 0.0, tl.exp(best - top))
    total = tl.sum(weight * tl.load(sum_ptr + head * num_parts + p, mask=p_ok, other=0.0), 0)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    parts = tl.load(parts_ptr + (head * num_parts + p)[:, None] * HEAD_DIM + d[None, :],
                    mask=p_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    out = tl.sum(weight[:, None] * parts, axis=0) / total
    tl.store(out_ptr + head * HEAD_DIM + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)


def num_parts(batch: int, kv_heads: int, length: int) -> int:
    """How many parts the positions split into: enough programs for the GPU, BLOCK_L
    positions each at least."""
    wanted = triton.cdiv(MIN_PROGRAMS, batch * kv_heads)
    return max(1, min(wanted, triton.cdiv(length, BLOCK_L)))


def decode_attention(query, key, value, mask, scaling: float, prefix=None) -> torch.Tensor:
    """One query per sequence: query [B, Hq, 1, D] (bf16), key/value [B, Hkv, L, D] (FP8,
    or any dtype), mask [B, 1, 1, L] (bool: attended) → [B, 1, Hq, D] in the query's dtype.
    Query heads h·G … h·G+G-1 share KV head h (G = Hq / Hkv). `prefix`: keys and values
    [1, Hkv, P, D] (P a multiple of BLOCK_L; key's dtype) every row may attend to before
    its own, under the mask's first P positions (then mask [B, 1, 1, P + L])."""
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    kept_key, kept_value = prefix if prefix is not None else (key, value)
    kept = kept_key.shape[2] if prefix is not None else 0
    length = kept + key.shape[2]
    if kept % BLOCK_L or (prefix is not None and kept_key.stride() != kept_value.stride()):
        raise ValueError("a prefix of whole blocks, its keys and values alike")
    if any(t.stride(-1) != 1 for t in (key, value, query, kept_key, kept_value)):
        raise ValueError("head_dim must be the innermost dimension")
    parts = num_parts(batch, kv_heads, length)
    part_len = triton.cdiv(triton.cdiv(length, parts), BLOCK_L) * BLOCK_L
    parts = triton.cdiv(length, part_len)
    q = query[:, :, 0]
    attend = mask.reshape(batch, -1).view(torch.uint8)  # bytes: 1 where attended
    out = query.new_empty(batch, 1, heads, head_dim)
    if parts == 1:
        partial = best = total = out
    else:
        partial = torch.empty(batch, heads, parts, head_dim, device=query.device,
                              dtype=torch.float32)  # fmt: skip
        best = torch.empty(batch, heads, parts, device=query.device, dtype=torch.float32)
        total = torch.empty_like(best)
    _parts_kernel[(batch, kv_heads, parts)](
        q, key, value, kept_key, kept_value, attend, partial, best, total, length, kept,
        part_len, parts, scaling, q.stride(0), q.stride(1), key.stride(0), key.stride(1),
        key.stride(2), value.stride(0), value.stride(1), value.stride(2), kept_key.stride(1),
        kept_key.stride(2), attend.stride(0),
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)), BLOCK_L=BLOCK_L,
        ONE_PART=parts == 1, F32=INTERPRETED, SKIP_EMPTY=prefix is not None, num_warps=WARPS,
        num_stages=STAGES,
    )  # fmt: skip
    if parts > 1:
        _merge_kernel[(batch * heads,)](
            partial, best, total, out, parts, HEAD_DIM=head_dim,
            BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_P=triton.next_power_of_2(parts),
            num_warps=4,
        )  # fmt: skip
    return out


def reference_attention(query, key, value, mask, scaling: float) -> torch.Tensor:
    """The same attention in float32 torch (query heads grouped over KV heads)."""
    batch, heads, _, head_dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    grouped = query.float().view(batch, kv_heads, heads // kv_heads, head_dim)
    scores = grouped @ key.float().transpose(-1, -2) * scaling
    probs = scores.masked_fill(~mask.view(batch, 1, 1, length), float("-inf")).softmax(-1)
    return (probs @ value.float()).reshape(batch, 1, heads, head_dim)


def works_on(device: torch.device) -> bool:
    """Where the kernels serve (GPUs; the CPU dequantizes instead): compile and run them
    once as the engine will (`matches_reference`)."""
    return device.type != "cuda" or matches_reference(device)


def matches_reference(device: torch.device) -> bool:
    """The kernels at Gemma 4's sliding-layer sizes (a tile that does not fit the GPU fails
    here, not in a decode step) against float32 attention: over random FP8 keys and values,
    and over bf16 ones after a prefix kept apart."""
    from inference.runtime.gemma4.fp8_experts import FP8
    from inference.runtime.kv_cache import fit

    generator = torch.Generator(device=device).manual_seed(0)
    rows, heads, kv_heads, length, dim = 2, 16, 8, 160, 256
    query, key, value, kept_key, kept_value = (
        torch.randn(*shape, generator=generator, device=device)
        for shape in ((rows, heads, 1, dim), (rows, kv_heads, length, dim),
                      (rows, kv_heads, length, dim), (1, kv_heads, BLOCK_L, dim),
                      (1, kv_heads, BLOCK_L, dim))
    )  # fmt: skip
    query = query.to(torch.bfloat16)
    mask = torch.rand(rows, 1, 1, BLOCK_L + length, generator=generator, device=device) < 0.7
    mask[..., 0] = True
    cases = [((fit(key, FP8), fit(value, FP8)), None, mask[..., BLOCK_L:]),
             ((key.bfloat16(), value.bfloat16()), (kept_key.bfloat16(), kept_value.bfloat16()),
              mask)]  # fmt: skip
    for (k, v), prefix, attended in cases:
        got = decode_attention(query, k, v, attended, 0.125, prefix).float()
        if prefix is not None:
            k, v = (torch.cat([kept.expand(rows, -1, -1, -1), own], dim=2)
                    for kept, own in zip(prefix, (k, v), strict=True))  # fmt: skip
        expected = reference_attention(query, k, v, attended, 0.125)
        if not (got - expected).abs().max() <= 0.02 * expected.abs().max():
            return False
    return True
