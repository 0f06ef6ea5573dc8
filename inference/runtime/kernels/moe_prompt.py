"""Gemma 4's experts for prompts as two Triton grouped GEMMs on bf16 tensor cores.

A prompt of thousands of tokens gives each expert hundreds of (token, expert) pairs, so
the experts are a matter of arithmetic, not of reading weights. After the pairs are
sorted by expert, a table of tiles (BLOCK_M pairs of one expert each) is made on the
device by one small kernel, without a host sync; each program multiplies one tile by one
block of its expert's weight rows:
  1. gate_up: the tile's hidden rows, gathered by token as they are loaded, against the
     gate and the up rows → GELU(tanh)(gate)·up, stored in sorted pair order;
  2. down: those rows against the down rows → one output row per pair;
then `moe.unpermute_sum` weights and sums each token's k rows. Against
`grouped_experts` (torch's grouped_mm) this saves the gather of the hidden rows into
expert order, the [pairs, 2I] gate_up output, and for FP8 experts (`fp8_experts`) the
dequantizing of every layer's weights: FP8 values are exact in bf16, so the kernels
convert them as they load them and scale each output column once: as fast as grouped_mm
in bf16, faster for FP8 experts than dequantizing first (docs/performance.md).
The grid holds as many tiles as the pairs could ever need; the programs past the table's
end return at once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.kernels.dot import INTERPRETED, dot
from inference.runtime.kernels.moe import (
    check_cases,
    chosen_blocks,
    close_enough,
    experts_op,
    gelu_times,
    scale_args,
    sort_by_expert,
    unpermute_sum,
)

# (BLOCK_M pairs, BLOCK_N weight rows, BLOCK_K, warps, stages) by weight dtype: the tiles of
# an 8-photo prefill's experts, swept by tools.check_kernels prompt-experts (docs/performance.md)
GATE_UP_BLOCKS = (128, 64, 64, 4, 3)
DOWN_BLOCKS = (128, 256, 64, 8, 3)
FP8_GATE_UP_BLOCKS = (128, 64, 64, 8, 4)
FP8_DOWN_BLOCKS = (128, 128, 64, 8, 3)


@triton.jit
def _tile(tile_expert_ptr, first_tile_ptr, starts_ptr, counts_ptr, num_experts,
          BLOCK_M: tl.constexpr):  # fmt: skip
    """This program's tile: (expert, its first sorted pair, the tile's pair numbers within
    the expert, which of them exist). expert == num_experts: past the table's end."""
    tile = tl.program_id(1)
    expert = tl.load(tile_expert_ptr + tile)
    safe = tl.minimum(expert, num_experts - 1)
    start = tl.load(starts_ptr + safe)
    count = tl.load(counts_ptr + safe)
    m = (tile - tl.load(first_tile_ptr + safe)) * BLOCK_M + tl.arange(0, BLOCK_M)
    return expert, start, m, m < count


@triton.jit
def _prompt_gate_up_kernel(
    x_ptr, w_ptr, scale_ptr, order_ptr, tile_expert_ptr, first_tile_ptr, starts_ptr,
    counts_ptr, out_ptr, num_experts, hidden, inter, stride_e, stride_n, stride_k,
    TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SCALED: tl.constexpr, F32: tl.constexpr,
):  # fmt: skip
    expert, start, m, m_ok = _tile(tile_expert_ptr, first_tile_ptr, starts_ptr, counts_ptr,
                                   num_experts, BLOCK_M)  # fmt: skip
    if expert >= num_experts:
        return
    token = tl.load(order_ptr + start + m, mask=m_ok, other=0) // TOP_K
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < inter
    k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + token[:, None].to(tl.int64) * hidden + k[None, :]
    gate_ptrs = (w_ptr + expert.to(tl.int64) * stride_e + rows[None, :].to(tl.int64) * stride_n
                 + k[:, None] * stride_k)  # fmt: skip
    up_offset = inter * stride_n
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for first in range(0, hidden, BLOCK_K):
        k_ok = first + k < hidden
        x = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w_mask = k_ok[:, None] & row_ok[None, :]
        gate = tl.load(gate_ptrs, mask=w_mask, other=0.0).to(x.dtype)
        up = tl.load(gate_ptrs + up_offset, mask=w_mask, other=0.0).to(x.dtype)
        acc_gate = dot(x, gate, acc_gate, F32)
        acc_up = dot(x, up, acc_up, F32)
        x_ptrs += BLOCK_K
        gate_ptrs += BLOCK_K * stride_k
    if SCALED:
        row_scales = scale_ptr + expert.to(tl.int64) * 2 * inter + rows
        acc_gate *= tl.load(row_scales, mask=row_ok, other=0.0)[None, :]
        acc_up *= tl.load(row_scales + inter, mask=row_ok, other=0.0)[None, :]
    out = gelu_times(acc_gate, acc_up)
    pair_rows = (start + m)[:, None].to(tl.int64)
    tl.store(out_ptr + pair_rows * inter + rows[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & row_ok[None, :])  # fmt: skip


@triton.jit
def _prompt_down_kernel(
    act_ptr, w_ptr, scale_ptr, tile_expert_ptr, first_tile_ptr, starts_ptr, counts_ptr,
    out_ptr, num_experts, hidden, inter, stride_e, stride_n, stride_k,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALED: tl.constexpr,
    F32: tl.constexpr,
):  # fmt: skip
    expert, start, m, m_ok = _tile(tile_expert_ptr, first_tile_ptr, starts_ptr, counts_ptr,
                                   num_experts, BLOCK_M)  # fmt: skip
    if expert >= num_experts:
        return
    pair_rows = (start + m)[:, None].to(tl.int64)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < hidden
    k = tl.arange(0, BLOCK_K)
    act_ptrs = act_ptr + pair_rows * inter + k[None, :]
    w_ptrs = (w_ptr + expert.to(tl.int64) * stride_e + rows[None, :].to(tl.int64) * stride_n
              + k[:, None] * stride_k)  # fmt: skip
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for first in range(0, inter, BLOCK_K):
        k_ok = first + k < inter
        act = tl.load(act_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_ok[:, None] & row_ok[None, :], other=0.0).to(act.dtype)
        acc = dot(act, w, acc, F32)
        act_ptrs += BLOCK_K
        w_ptrs += BLOCK_K * stride_k
    if SCALED:
        row_scales = scale_ptr + expert.to(tl.int64) * hidden + rows
        acc *= tl.load(row_scales, mask=row_ok, other=0.0)[None, :]
    tl.store(out_ptr + pair_rows * hidden + rows[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & row_ok[None, :])  # fmt: skip


# Triton compiles a kernel again for each new pattern of its int arguments (== 1, or a
# multiple of 16): a prefill whose `num_slots` first made a new pattern waited for a compile
# while serving (docs/performance.md). This kernel takes any `num_slots` with one compile.
@triton.jit(do_not_specialize=["num_slots"])
def _tile_table_kernel(counts_ptr, starts_ptr, first_tile_ptr, tile_expert_ptr, num_experts,
                       num_slots, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
                       BLOCK_T: tl.constexpr):  # fmt: skip
    """One program: each expert's first sorted pair and first tile, and each tile slot's
    expert (num_experts past the last tile)."""
    experts = tl.arange(0, BLOCK_E)
    valid = experts < num_experts
    counts = tl.load(counts_ptr + experts, mask=valid, other=0)
    tiles = (counts + BLOCK_M - 1) // BLOCK_M
    ends = tl.cumsum(tiles, 0)
    tl.store(starts_ptr + experts, tl.cumsum(counts, 0) - counts, mask=valid)
    tl.store(first_tile_ptr + experts, ends - tiles, mask=valid)
    for first in range(0, num_slots, BLOCK_T):
        slots = first + tl.arange(0, BLOCK_T)
        done = (ends[None, :] <= slots[:, None]) & valid[None, :]  # experts before the slot's
        tl.store(tile_expert_ptr + slots, tl.sum(done.to(tl.int32), 1), mask=slots < num_slots)


def tile_table(counts: torch.Tensor, block_m: int, pairs: int):
    """Tiles of BLOCK_M sorted pairs, each of one expert: (each expert's first sorted pair,
    the expert of each tile slot, num_experts beyond the last tile; each expert's first
    tile). As many slots as any routing could need; one kernel (the CPU launches a prompt's
    layers: ten small torch ops cost it more than the GPU)."""
    num_experts = counts.shape[0]
    starts, first_tile = torch.empty_like(counts), torch.empty_like(counts)
    tile_expert = counts.new_empty(triton.cdiv(pairs, block_m) + num_experts)
    _tile_table_kernel[(1,)](
        counts, starts, first_tile, tile_expert, num_experts, tile_expert.shape[0],
        BLOCK_M=block_m, BLOCK_E=triton.next_power_of_2(num_experts), BLOCK_T=128,
    )  # fmt: skip
    return starts, tile_expert, first_tile


def prompt_experts(
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    gate_up_scale: torch.Tensor | None = None,
    down_scale: torch.Tensor | None = None,
    gate_up_blocks: tuple[int, int, int, int, int] | None = None,
    down_blocks: tuple[int, int, int, int, int] | None = None,
) -> torch.Tensor:
    """Σ_k w[t,k] · down[e] · (gelu(gate[e] x) · up[e] x), as `moe.fused_experts`,
    for prompts: hidden [T, H]; weights as Gemma4TextExperts keeps them, or FP8 with row
    scales."""
    tokens, top_k = top_k_index.shape
    num_experts, hidden_size, inter = down_proj.shape
    pairs = tokens * top_k
    order, counts, position = sort_by_expert(top_k_index, num_experts)
    act = hidden.new_empty(pairs, inter)
    gate_up_blocks = chosen_blocks(gate_up_blocks, gate_up_proj, GATE_UP_BLOCKS,
                                   FP8_GATE_UP_BLOCKS)  # fmt: skip
    down_blocks = chosen_blocks(down_blocks, down_proj, DOWN_BLOCKS, FP8_DOWN_BLOCKS)
    block_m, block_n, block_k, warps, stages = gate_up_blocks
    starts, tile_expert, first_tile = tile_table(counts, block_m, pairs)
    _prompt_gate_up_kernel[(triton.cdiv(inter, block_n), tile_expert.shape[0])](
        hidden.contiguous(), gate_up_proj, order_ptr=order, tile_expert_ptr=tile_expert,
        first_tile_ptr=first_tile, starts_ptr=starts, counts_ptr=counts, out_ptr=act,
        num_experts=num_experts, hidden=hidden_size, inter=inter,
        stride_e=gate_up_proj.stride(0), stride_n=gate_up_proj.stride(1),
        stride_k=gate_up_proj.stride(2), TOP_K=top_k, BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=block_k, num_warps=warps, num_stages=stages,
        F32=INTERPRETED, **scale_args(gate_up_proj, gate_up_scale),
    )  # fmt: skip
    rows = hidden.new_empty(pairs, hidden_size)
    block_m, block_n, block_k, warps, stages = down_blocks
    if block_m != gate_up_blocks[0]:
        _, tile_expert, first_tile = tile_table(counts, block_m, pairs)
    _prompt_down_kernel[(triton.cdiv(hidden_size, block_n), tile_expert.shape[0])](
        act, down_proj, tile_expert_ptr=tile_expert, first_tile_ptr=first_tile,
        starts_ptr=starts, counts_ptr=counts, out_ptr=rows, num_experts=num_experts,
        hidden=hidden_size, inter=inter, stride_e=down_proj.stride(0),
        stride_n=down_proj.stride(1), stride_k=down_proj.stride(2), BLOCK_M=block_m,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
        F32=INTERPRETED, **scale_args(down_proj, down_scale),
    )  # fmt: skip
    return unpermute_sum(rows, position, top_k_weights)


prompt_experts_op = experts_op("prompt_experts", prompt_experts)


def works_on(device: torch.device) -> bool:
    """Compile and run the kernels once on small random experts (bf16, and FP8 where the
    device has it), against moe's float32 reference."""
    return all(
        close_enough(prompt_experts(x, index, weights, *stored), expected)
        for x, index, weights, stored, expected in check_cases(device, tokens=67)
    )
