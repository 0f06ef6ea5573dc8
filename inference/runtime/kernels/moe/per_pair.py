"""Decode steps of few tokens: one program per (pair, block of intermediate rows) for
gate_up, one per (token, block of hidden rows) for down, summing the token's experts in
registers (no scatter, no atomics)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.kernels.moe.common import (
    chosen_blocks,
    experts_op,
    gelu_times,
    routed_pair,
    row_scale,
    scale_args,
)

# Tiles, swept by tools.check_kernels experts (docs/performance.md): (BLOCK_N, BLOCK_K, warps)
GATE_UP_BLOCKS = (16, 128, 8)
DOWN_BLOCKS = (8, 128, 8)
# FP8 weights: the same bytes per block load take twice the K
FP8_GATE_UP_BLOCKS = (8, 256, 4)
FP8_DOWN_BLOCKS = DOWN_BLOCKS


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, scale_ptr, index_ptr, out_ptr,
    hidden, inter, stride_e, stride_n, stride_k,
    TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALED: tl.constexpr,
):  # fmt: skip
    pair = tl.program_id(0)
    block = tl.program_id(1)
    token = pair // TOP_K
    expert = tl.load(index_ptr + pair).to(tl.int64)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < inter
    cols = tl.arange(0, BLOCK_K)
    gate_rows = w_ptr + expert * stride_e + rows[:, None].to(tl.int64) * stride_n
    up_rows = gate_rows + inter * stride_n
    acc_gate = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for start in range(0, hidden, BLOCK_K):
        col = start + cols
        col_ok = col < hidden
        x = tl.load(x_ptr + token * hidden + col, mask=col_ok, other=0.0).to(tl.float32)
        mask = row_ok[:, None] & col_ok[None, :]
        gate = tl.load(gate_rows + col[None, :] * stride_k, mask=mask, other=0.0)
        up = tl.load(up_rows + col[None, :] * stride_k, mask=mask, other=0.0)
        acc_gate += gate.to(tl.float32) * x[None, :]
        acc_up += up.to(tl.float32) * x[None, :]
    gate = tl.sum(acc_gate, axis=1)
    up = tl.sum(acc_up, axis=1)
    if SCALED:
        gate *= row_scale(scale_ptr, expert, rows, row_ok, 2 * inter)
        up *= row_scale(scale_ptr, expert, rows + inter, row_ok, 2 * inter)
    out = gelu_times(gate, up)
    tl.store(out_ptr + pair * inter + rows, out.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _down_kernel(
    act_ptr, w_ptr, scale_ptr, index_ptr, weight_ptr, out_ptr,
    hidden, inter, stride_e, stride_n, stride_k,
    TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SCALED: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    block = tl.program_id(1)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < hidden
    cols = tl.arange(0, BLOCK_K)
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k in tl.static_range(TOP_K):
        pair, expert, routing = routed_pair(index_ptr, weight_ptr, token, k, TOP_K)
        expert_rows = w_ptr + expert * stride_e + rows[:, None].to(tl.int64) * stride_n
        acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for start in range(0, inter, BLOCK_K):
            col = start + cols
            col_ok = col < inter
            act = tl.load(act_ptr + pair * inter + col, mask=col_ok, other=0.0).to(tl.float32)
            mask = row_ok[:, None] & col_ok[None, :]
            down = tl.load(expert_rows + col[None, :] * stride_k, mask=mask, other=0.0)
            acc += down.to(tl.float32) * act[None, :]
        part = tl.sum(acc, axis=1)
        if SCALED:
            part *= row_scale(scale_ptr, expert, rows, row_ok, hidden)
        total += routing * part
    tl.store(out_ptr + token * hidden + rows, total.to(out_ptr.dtype.element_ty), mask=row_ok)


def fused_experts(
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    gate_up_scale: torch.Tensor | None = None,
    down_scale: torch.Tensor | None = None,
    gate_up_blocks: tuple[int, int, int] | None = None,
    down_blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Σ_k w[t,k] · down[e] · (gelu(gate[e] x) · up[e] x) for tokens `hidden` [T, H], experts
    e = top_k_index[t,k]; gate_up_proj [E, 2I, H], down_proj [E, H, I] as transformers keeps
    them (Gemma4TextExperts), or as FP8 with per-row scales [E, 2I] and [E, H]."""
    tokens, hidden_size = hidden.shape
    top_k = top_k_index.shape[1]
    inter = down_proj.shape[2]
    hidden = hidden.contiguous()
    index = top_k_index.contiguous()
    weights = top_k_weights.contiguous()
    act = torch.empty(tokens * top_k, inter, dtype=hidden.dtype, device=hidden.device)
    block_n, block_k, warps = chosen_blocks(gate_up_blocks, gate_up_proj, GATE_UP_BLOCKS,
                                      FP8_GATE_UP_BLOCKS)  # fmt: skip
    _gate_up_kernel[(tokens * top_k, triton.cdiv(inter, block_n))](
        hidden, gate_up_proj, index_ptr=index, out_ptr=act,
        hidden=hidden_size, inter=inter, stride_e=gate_up_proj.stride(0),
        stride_n=gate_up_proj.stride(1), stride_k=gate_up_proj.stride(2),
        TOP_K=top_k, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
        **scale_args(gate_up_proj, gate_up_scale),
    )  # fmt: skip
    out = torch.empty_like(hidden)
    block_n, block_k, warps = chosen_blocks(down_blocks, down_proj, DOWN_BLOCKS, FP8_DOWN_BLOCKS)
    _down_kernel[(tokens, triton.cdiv(hidden_size, block_n))](
        act, down_proj, index_ptr=index, weight_ptr=weights, out_ptr=out,
        hidden=hidden_size, inter=inter, stride_e=down_proj.stride(0),
        stride_n=down_proj.stride(1), stride_k=down_proj.stride(2),
        TOP_K=top_k, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
        **scale_args(down_proj, down_scale),
    )  # fmt: skip
    return out


fused_experts_op = experts_op("fused_experts", fused_experts)
