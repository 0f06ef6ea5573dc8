"""Decode steps of more tokens: each program one expert and all its tokens, so every
touched expert's weights are read once; the pairs are grouped by expert first (routing)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.kernels.moe.common import (
    chosen_blocks,
    gelu_times,
    row_scale,
    scale_args,
)
from inference.runtime.kernels.moe.routing import (
    MAX_ROUTED_TOKENS,
    group_by_expert,
    route,
    route_and_group,
    unpermute_sum,
)

# Tiles, swept by tools.check_kernels experts (docs/performance.md):
# (BLOCK_M tokens, BLOCK_N, BLOCK_K, warps)
EXPERT_GATE_UP_BLOCKS = (16, 32, 128, 4)
EXPERT_DOWN_BLOCKS = (16, 32, 128, 4)
# FP8 weights: the same bytes per block load take twice the K
FP8_EXPERT_GATE_UP_BLOCKS = EXPERT_GATE_UP_BLOCKS
FP8_EXPERT_DOWN_BLOCKS = (16, 64, 256, 4)


@triton.jit
def _expert_block(w_ptr, starts_ptr, counts_ptr, num_rows, stride_e, stride_n, BLOCK_N):
    """This program's expert and block of weight rows: (rows, rows in range, the expert's
    first sorted pair and its number of pairs, pointers to the rows)."""
    expert = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    weight_rows = w_ptr + expert.to(tl.int64) * stride_e + rows[:, None].to(tl.int64) * stride_n
    start = tl.load(starts_ptr + expert)
    count = tl.load(counts_ptr + expert)
    return rows, rows < num_rows, start, count, weight_rows


@triton.jit
def _expert_gate_up_kernel(
    x_ptr, w_ptr, scale_ptr, order_ptr, starts_ptr, counts_ptr, out_ptr,
    hidden, inter, stride_e, stride_n, stride_k,
    TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SCALED: tl.constexpr,
):  # fmt: skip
    rows, row_ok, start, count, gate_rows = _expert_block(
        w_ptr, starts_ptr, counts_ptr, inter, stride_e, stride_n, BLOCK_N
    )
    up_rows = gate_rows + inter * stride_n
    if SCALED:
        expert = tl.program_id(0)
        gate_scale = row_scale(scale_ptr, expert, rows, row_ok, 2 * inter)
        up_scale = row_scale(scale_ptr, expert, rows + inter, row_ok, 2 * inter)
    cols = tl.arange(0, BLOCK_K)
    for first in range(0, count, BLOCK_M):  # the expert's tokens, BLOCK_M at a time
        m = first + tl.arange(0, BLOCK_M)
        m_ok = m < count
        token = tl.load(order_ptr + start + m, mask=m_ok, other=0) // TOP_K
        acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, hidden, BLOCK_K):
            col = k + cols
            col_ok = col < hidden
            x = tl.load(x_ptr + token[:, None].to(tl.int64) * hidden + col[None, :],
                        mask=m_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # fmt: skip
            mask = row_ok[:, None] & col_ok[None, :]
            gate = tl.load(gate_rows + col[None, :] * stride_k, mask=mask, other=0.0)
            up = tl.load(up_rows + col[None, :] * stride_k, mask=mask, other=0.0)
            # bf16 values are exact in tf32: the products are, the sums are float32
            acc_gate += tl.dot(x, tl.trans(gate.to(tl.float32)), input_precision="tf32")
            acc_up += tl.dot(x, tl.trans(up.to(tl.float32)), input_precision="tf32")
        if SCALED:
            acc_gate *= gate_scale[None, :]
            acc_up *= up_scale[None, :]
        out = gelu_times(acc_gate, acc_up)
        pair_rows = (start + m)[:, None].to(tl.int64)
        out_mask = m_ok[:, None] & row_ok[None, :]
        tl.store(out_ptr + pair_rows * inter + rows[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=out_mask)  # fmt: skip


@triton.jit
def _expert_down_kernel(
    act_ptr, w_ptr, scale_ptr, starts_ptr, counts_ptr, out_ptr,
    hidden, inter, stride_e, stride_n, stride_k,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALED: tl.constexpr,
):  # fmt: skip
    rows, row_ok, start, count, expert_rows = _expert_block(
        w_ptr, starts_ptr, counts_ptr, hidden, stride_e, stride_n, BLOCK_N
    )
    if SCALED:
        scales = row_scale(scale_ptr, tl.program_id(0), rows, row_ok, hidden)
    cols = tl.arange(0, BLOCK_K)
    for first in range(0, count, BLOCK_M):
        m = first + tl.arange(0, BLOCK_M)
        m_ok = m < count
        pair_rows = (start + m)[:, None].to(tl.int64)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, inter, BLOCK_K):
            col = k + cols
            col_ok = col < inter
            act_mask = m_ok[:, None] & col_ok[None, :]
            act = tl.load(act_ptr + pair_rows * inter + col[None, :], mask=act_mask, other=0.0)
            act = act.to(tl.float32)
            down = tl.load(expert_rows + col[None, :] * stride_k,
                           mask=row_ok[:, None] & col_ok[None, :], other=0.0)  # fmt: skip
            acc += tl.dot(act, tl.trans(down.to(tl.float32)), input_precision="tf32")
        if SCALED:
            acc *= scales[None, :]
        tl.store(out_ptr + pair_rows * hidden + rows[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & row_ok[None, :])  # fmt: skip


def expert_major_experts(
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    gate_up_scale: torch.Tensor | None = None,
    down_scale: torch.Tensor | None = None,
    gate_up_blocks: tuple[int, int, int, int] | None = None,
    down_blocks: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """The same sum as `fused_experts`, each program one expert and all its tokens: every
    touched expert's weights are read once, however many tokens chose it. The pairs are
    sorted by expert first; `unpermute_sum` weights and sums each token's k rows."""
    num_experts = down_proj.shape[0]
    grouping = group_by_expert(top_k_index, num_experts)
    return _expert_major(hidden, top_k_weights, *grouping, gate_up_proj, down_proj,
                         gate_up_scale, down_scale, gate_up_blocks, down_blocks)  # fmt: skip


def routed_expert_major(
    hidden: torch.Tensor,
    scores: torch.Tensor,
    per_expert_scale: torch.Tensor,
    top_k: int,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    gate_up_scale: torch.Tensor | None = None,
    down_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """`expert_major_experts` from the router's scores (Gemma4TextRouter's choice, as
    `route` makes it): the choice and the pairs' grouping in one kernel (up to
    MAX_ROUTED_TOKENS tokens; more: `route`, then `group_by_expert`)."""
    if scores.shape[0] > MAX_ROUTED_TOKENS:
        weights, index = route(scores, per_expert_scale, top_k)
        grouping = group_by_expert(index, down_proj.shape[0])
    else:
        weights, _, *grouping = route_and_group(scores, per_expert_scale, top_k)
    return _expert_major(hidden, weights, *grouping, gate_up_proj, down_proj, gate_up_scale,
                         down_scale)  # fmt: skip


def _expert_major(
    hidden, top_k_weights, order, counts, starts, position, gate_up_proj, down_proj,
    gate_up_scale=None, down_scale=None, gate_up_blocks=None, down_blocks=None,
) -> torch.Tensor:  # fmt: skip
    """The expert-major kernels and the sum, on pairs grouped by expert (group_by_expert)."""
    tokens, top_k = top_k_weights.shape
    num_experts, hidden_size, inter = down_proj.shape
    act = hidden.new_empty(tokens * top_k, inter)
    gate_up_blocks = chosen_blocks(
        gate_up_blocks, gate_up_proj, EXPERT_GATE_UP_BLOCKS, FP8_EXPERT_GATE_UP_BLOCKS
    )
    block_m, block_n, block_k, warps = gate_up_blocks
    _expert_gate_up_kernel[(num_experts, triton.cdiv(inter, block_n))](
        hidden.contiguous(), gate_up_proj, order_ptr=order, starts_ptr=starts, counts_ptr=counts,
        out_ptr=act, hidden=hidden_size, inter=inter, stride_e=gate_up_proj.stride(0),
        stride_n=gate_up_proj.stride(1), stride_k=gate_up_proj.stride(2),
        TOP_K=top_k, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
        **scale_args(gate_up_proj, gate_up_scale),
    )  # fmt: skip
    rows = hidden.new_empty(tokens * top_k, hidden_size)
    down_blocks = chosen_blocks(down_blocks, down_proj, EXPERT_DOWN_BLOCKS, FP8_EXPERT_DOWN_BLOCKS)
    block_m, block_n, block_k, warps = down_blocks
    _expert_down_kernel[(num_experts, triton.cdiv(hidden_size, block_n))](
        act, down_proj, starts_ptr=starts, counts_ptr=counts, out_ptr=rows,
        hidden=hidden_size, inter=inter, stride_e=down_proj.stride(0),
        stride_n=down_proj.stride(1), stride_k=down_proj.stride(2),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
        **scale_args(down_proj, down_scale),
    )  # fmt: skip
    return unpermute_sum(rows, position, top_k_weights)


@torch.library.custom_op(
    "travelbot::routed_expert_major",
    mutates_args=(),
    schema="(Tensor hidden, Tensor scores, Tensor per_expert_scale, int top_k, "
    "Tensor gate_up_proj, Tensor down_proj, Tensor? gate_up_scale=None, "
    "Tensor? down_scale=None) -> Tensor",
)
def routed_expert_major_op(*args):
    return routed_expert_major(*args)


@routed_expert_major_op.register_fake
def _(hidden, *args):
    return torch.empty_like(hidden)
