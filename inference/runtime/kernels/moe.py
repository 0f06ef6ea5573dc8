"""Gemma 4's experts as Triton kernels: whole for a decode step of few tokens, and the
last step (un-permute and weighted sum) of the grouped GEMMs for more.

grouped_mm needs the (token, expert) pairs sorted, gathered and described to CUTLASS
before it multiplies: ~15 small kernels a layer, and at 1-8 tokens its GEMMs read the
weights well below the memory's bandwidth. Here each pair reads its expert's rows straight
from the stored weights:
  1. gate_up: one program per (pair, block of intermediate rows) → GELU(tanh)(gate)·up;
  2. down: one program per (token, block of hidden rows), looping over the token's top-k
     experts, weighting by the router and summing in registers (no scatter, no atomics).
Programs of neighbouring pairs read the same rows when tokens share an expert, so the
second read mostly hits L2. The two kernels' loops look alike but are kept apart: gate_up
streams gate and up rows against one load of x, which a shared row-dot helper would load
twice (slower at 1 token: docs/performance.md).

For prompts (moe_prompt's Triton GEMMs by default; this where they fail, and as
the benchmarks' baseline), `grouped_experts` sorts the pairs by expert for two grouped
GEMMs as transformers does, then `_unpermute_sum_kernel` gathers each token's k output
rows, weights and sums them in float32 in one pass (inductor's fused gather-multiply-sum
read them at a fraction of the bandwidth: docs/performance.md).

Weights stored as FP8 (fp8_experts) come with one float32 scale per weight row: the
decode kernels load the FP8 values, and scale each row's sum once (SCALED).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from inference.runtime.gemma4 import fp8_experts

# Tiles of the decode kernels, swept by scripts/check_moe_kernel.py (docs/performance.md).
# (BLOCK_N, BLOCK_K, warps) of the per-pair kernels
GATE_UP_BLOCKS = (16, 128, 8)
DOWN_BLOCKS = (8, 128, 8)
# (BLOCK_M tokens, BLOCK_N, BLOCK_K, warps) of the expert-major kernels
EXPERT_GATE_UP_BLOCKS = (16, 32, 128, 4)
EXPERT_DOWN_BLOCKS = (16, 32, 128, 4)
# FP8 weights: the same bytes per block load take twice the K
FP8_GATE_UP_BLOCKS = (8, 256, 4)
FP8_DOWN_BLOCKS = DOWN_BLOCKS
FP8_EXPERT_GATE_UP_BLOCKS = EXPERT_GATE_UP_BLOCKS
FP8_EXPERT_DOWN_BLOCKS = (16, 64, 256, 4)


@triton.jit
def gelu_times(gate, up):
    """gelu_pytorch_tanh(gate) · up; 0.5·g·(1 + tanh(y)) == g·sigmoid(2y)."""
    inner = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
    return gate * tl.sigmoid(2.0 * inner) * up


@triton.jit
def _choose(scores_ptr, scale_ptr, weights_ptr, index_ptr, t, tokens, num_experts,
            BLOCK_E: tl.constexpr, TOP_K: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """Tokens `t` (those below `tokens`): softmax over each one's expert scores (float32),
    the TOP_K largest in descending order (the lowest expert first among equals), their
    probabilities over their sum, times each chosen expert's scale; stored as weights and
    experts [T, TOP_K]. BLOCK_K: TOP_K rounded up to a power of 2. Returns the (token, k)
    pairs' experts, whether each is one, and its index, for grouping."""
    experts = tl.arange(0, BLOCK_E)
    t_ok, e_ok = t < tokens, experts < num_experts
    scores = tl.load(
        scores_ptr + t[:, None] * num_experts + experts[None, :],
        mask=t_ok[:, None] & e_ok[None, :],
        other=-float("inf"),
    ).to(tl.float32)
    top = tl.where(t_ok, tl.max(scores, 1), 0.0)  # rows past `tokens`: all -inf
    exps = tl.exp(scores - top[:, None])
    sums = tl.sum(exps, 1)
    probs = tl.where(e_ok[None, :], exps / tl.where(sums == 0.0, 1.0, sums)[:, None], -1.0)
    slots = tl.arange(0, BLOCK_K)
    chosen_probs = tl.zeros((t.shape[0], BLOCK_K), dtype=tl.float32)  # 0 beyond TOP_K
    chosen = tl.zeros((t.shape[0], BLOCK_K), dtype=tl.int32)
    for k in tl.static_range(TOP_K):
        best = tl.max(probs, 1)
        expert = tl.min(tl.where(probs == best[:, None], experts[None, :], BLOCK_E), 1)
        chosen_probs = tl.where(slots[None, :] == k, best[:, None], chosen_probs)
        chosen = tl.where(slots[None, :] == k, expert[:, None], chosen)
        probs = tl.where(experts[None, :] == expert[:, None], -1.0, probs)
    ok = t_ok[:, None] & (slots < TOP_K)[None, :]
    pairs = t[:, None] * TOP_K + slots[None, :]
    scale = tl.load(scale_ptr + chosen, mask=ok, other=0.0).to(tl.float32)
    total = tl.sum(chosen_probs, 1)
    weights = chosen_probs / tl.where(total == 0.0, 1.0, total)[:, None] * scale
    tl.store(weights_ptr + pairs, weights, mask=ok)
    tl.store(index_ptr + pairs, chosen.to(tl.int64), mask=ok)
    return chosen, ok, pairs


@triton.jit(do_not_specialize=["tokens"])
def _route_kernel(scores_ptr, scale_ptr, weights_ptr, index_ptr, tokens, num_experts,
                  BLOCK_E: tl.constexpr, TOP_K: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """One token's choice (`_choose`)."""
    _choose(scores_ptr, scale_ptr, weights_ptr, index_ptr, tl.program_id(0) + tl.arange(0, 1),
            tokens, num_experts, BLOCK_E, TOP_K, BLOCK_K)  # fmt: skip


@torch.library.custom_op("travelbot::route", mutates_args=())
def route(
    scores: torch.Tensor, per_expert_scale: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma4TextRouter's choice from its expert scores [T, E]: (weights float32 [T, k],
    experts int64 [T, k]), as one kernel instead of softmax, top-k, sort, sum and gather."""
    tokens, num_experts = scores.shape
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=scores.device)
    index = torch.empty(tokens, top_k, dtype=torch.int64, device=scores.device)
    _route_kernel[(tokens,)](
        scores.contiguous(), per_expert_scale, weights, index, tokens, num_experts,
        BLOCK_E=triton.next_power_of_2(num_experts), TOP_K=top_k,
        BLOCK_K=triton.next_power_of_2(top_k),
    )  # fmt: skip
    return weights, index


@route.register_fake
def _(scores, per_expert_scale, top_k):
    tokens = scores.shape[0]
    return (scores.new_empty(tokens, top_k, dtype=torch.float32),
            scores.new_empty(tokens, top_k, dtype=torch.int64))  # fmt: skip


@triton.jit
def _routed_pair(index_ptr, weight_ptr, token, k, TOP_K: tl.constexpr):
    """The token's k-th (token, expert) pair: its number, the int64 value stored for it at
    `index_ptr` (expert, or sorted row) and its router weight in float32."""
    pair = token * TOP_K + k
    return pair, tl.load(index_ptr + pair).to(tl.int64), tl.load(weight_ptr + pair).to(tl.float32)


@triton.jit
def _row_scale(scale_ptr, expert, rows, row_ok, num_rows):
    """The FP8 scales of an expert's weight rows (scales stored [experts, num_rows])."""
    return tl.load(scale_ptr + expert.to(tl.int64) * num_rows + rows, mask=row_ok, other=0.0)


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
        gate *= _row_scale(scale_ptr, expert, rows, row_ok, 2 * inter)
        up *= _row_scale(scale_ptr, expert, rows + inter, row_ok, 2 * inter)
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
        pair, expert, routing = _routed_pair(index_ptr, weight_ptr, token, k, TOP_K)
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
            part *= _row_scale(scale_ptr, expert, rows, row_ok, hidden)
        total += routing * part
    tl.store(out_ptr + token * hidden + rows, total.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _unpermute_sum_kernel(
    rows_ptr, position_ptr, weight_ptr, out_ptr, hidden,
    TOP_K: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < hidden
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in tl.static_range(TOP_K):
        _, row, routing = _routed_pair(position_ptr, weight_ptr, token, k, TOP_K)
        values = tl.load(rows_ptr + row * hidden + cols, mask=ok, other=0.0)
        total += routing * values.to(tl.float32)
    tl.store(out_ptr + token * hidden + cols, total.to(out_ptr.dtype.element_ty), mask=ok)


@torch.library.custom_op("travelbot::unpermute_sum", mutates_args=())
def unpermute_sum(
    rows: torch.Tensor, position: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """out[t] = Σ_k weights[t,k] · rows[position[t·K+k]]: rows [T·K, H] in expert order,
    position [T·K] where each (token, k) pair's row went, weights [T, K] → [T, H]."""
    tokens, top_k = weights.shape
    hidden = rows.shape[1]
    out = rows.new_empty(tokens, hidden)
    block = 1024
    _unpermute_sum_kernel[(tokens, triton.cdiv(hidden, block))](
        rows.contiguous(), position.contiguous(), weights.contiguous(), out, hidden,
        TOP_K=top_k, BLOCK=block, num_warps=4,
    )  # fmt: skip
    return out


@unpermute_sum.register_fake
def _(rows, position, weights):
    return rows.new_empty(weights.shape[0], rows.shape[1])


def sort_by_expert(top_k_index: torch.Tensor, num_experts: int):
    """(token, k) pairs in expert order: `order` (pair of each sorted row), `counts` [E]
    (int32, pairs per expert) and `position` (sorted row of each pair). No host sync."""
    ids = top_k_index.reshape(-1)
    # one-byte keys: a radix sort over 8 bits, not 64 (docs/performance.md)
    expert_ids, order = torch.sort(ids.to(torch.uint8) if num_experts <= 256 else ids)
    counts_of = expert_ids.int() if expert_ids.is_cuda else expert_ids.float()  # histc: CPU float
    counts = torch.histc(counts_of, bins=num_experts, min=0, max=num_experts - 1).int()
    position = torch.empty_like(order)
    position[order] = torch.arange(order.shape[0], device=order.device)
    return order, counts, position


@triton.jit(do_not_specialize=["num_pairs"])  # any batch size: no compile while serving
def _group_pairs_kernel(
    index_ptr, counts_ptr, starts_ptr, cursor_ptr, order_ptr, position_ptr, num_pairs,
    num_experts, BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr,
):  # fmt: skip
    """All (token, expert) pairs in one program: pairs per expert, where each expert's rows
    start, then each pair takes its expert's next row (one atomic counter per expert)."""
    pairs = tl.arange(0, BLOCK_P)
    ok = pairs < num_pairs
    experts = tl.load(index_ptr + pairs, mask=ok, other=0).to(tl.int32)
    _group_pairs(experts, pairs, ok, counts_ptr, starts_ptr, cursor_ptr, order_ptr,
                 position_ptr, num_experts, BLOCK_E)  # fmt: skip


@triton.jit
def _group_pairs(experts, pairs, ok, counts_ptr, starts_ptr, cursor_ptr, order_ptr,
                 position_ptr, num_experts, BLOCK_E: tl.constexpr):  # fmt: skip
    """Pairs `pairs` (chosen `experts`, where `ok`) grouped by expert: counts, starts, and
    each pair's row (its expert's next, through one atomic counter per expert)."""
    counts = tl.histogram(experts, BLOCK_E, mask=ok)
    starts = tl.cumsum(counts, 0) - counts
    bins = tl.arange(0, BLOCK_E)
    in_range = bins < num_experts
    tl.store(counts_ptr + bins, counts, mask=in_range)
    tl.store(starts_ptr + bins, starts, mask=in_range)
    tl.store(cursor_ptr + bins, starts, mask=in_range)
    tl.debug_barrier()
    position = tl.atomic_add(cursor_ptr + experts, 1, mask=ok)
    tl.store(position_ptr + pairs, position, mask=ok)
    tl.store(order_ptr + position, pairs, mask=ok)


MAX_GROUPED_PAIRS = 4096  # one program holds them all


def group_by_expert(top_k_index: torch.Tensor, num_experts: int):
    """`sort_by_expert` plus where each expert's rows start, as one kernel for up to
    MAX_GROUPED_PAIRS pairs instead of ~10 (sort, histogram, scatter, cumsum) a layer
    (docs/performance.md). One expert's pairs come in any order: each row is computed on
    its own. Returns (order, counts, starts, position), int32."""
    ids = top_k_index.reshape(-1).contiguous()
    num_pairs = ids.shape[0]
    if num_pairs > MAX_GROUPED_PAIRS:
        order, counts, position = sort_by_expert(top_k_index, num_experts)
        starts = torch.cumsum(counts, dim=0, dtype=torch.int32) - counts
        return order, counts, starts, position
    counts, starts, cursor = ids.new_empty(3, num_experts, dtype=torch.int32)
    order, position = ids.new_empty(2, num_pairs, dtype=torch.int32)
    _group_pairs_kernel[(1,)](
        ids, counts, starts, cursor, order, position, num_pairs, num_experts,
        BLOCK_P=max(triton.next_power_of_2(num_pairs), 16),
        BLOCK_E=triton.next_power_of_2(num_experts), num_warps=4,
    )  # fmt: skip
    return order, counts, starts, position


@triton.jit(do_not_specialize=["tokens"])
def _route_group_kernel(
    scores_ptr, scale_ptr, weights_ptr, index_ptr, counts_ptr, starts_ptr, cursor_ptr,
    order_ptr, position_ptr, tokens, num_experts, BLOCK_T: tl.constexpr,
    BLOCK_E: tl.constexpr, TOP_K: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """`_choose` for all tokens at once, then `_group_pairs` on its choice, in one program:
    a decode step's router and grouping as one launch instead of two."""
    chosen, ok, pairs = _choose(scores_ptr, scale_ptr, weights_ptr, index_ptr,
                                tl.arange(0, BLOCK_T), tokens, num_experts, BLOCK_E, TOP_K,
                                BLOCK_K)  # fmt: skip
    _group_pairs(tl.reshape(chosen, (BLOCK_T * BLOCK_K,)), tl.reshape(pairs, (BLOCK_T * BLOCK_K,)),
                 tl.reshape(ok, (BLOCK_T * BLOCK_K,)), counts_ptr, starts_ptr, cursor_ptr,
                 order_ptr, position_ptr, num_experts, BLOCK_E)  # fmt: skip


MAX_ROUTED_TOKENS = 64  # route_and_group: one program holds their scores for all experts


def route_and_group(scores: torch.Tensor, per_expert_scale: torch.Tensor, top_k: int):
    """`route` then `group_by_expert` for up to MAX_ROUTED_TOKENS tokens in one kernel:
    (weights float32 [T, k], experts int64 [T, k], order, counts, starts, position)."""
    tokens, num_experts = scores.shape
    if tokens > MAX_ROUTED_TOKENS:
        raise ValueError(f"at most {MAX_ROUTED_TOKENS} tokens")
    weights = scores.new_empty(tokens, top_k, dtype=torch.float32)
    index = scores.new_empty(tokens, top_k, dtype=torch.int64)
    counts, starts, cursor = scores.new_empty(3, num_experts, dtype=torch.int32)
    order, position = scores.new_empty(2, tokens * top_k, dtype=torch.int32)
    _route_group_kernel[(1,)](
        scores.contiguous(), per_expert_scale, weights, index, counts, starts, cursor, order,
        position, tokens, num_experts, BLOCK_T=max(triton.next_power_of_2(tokens), 2),
        BLOCK_E=triton.next_power_of_2(num_experts), TOP_K=top_k,
        BLOCK_K=triton.next_power_of_2(top_k), num_warps=8,
    )  # fmt: skip
    return weights, index, order, counts, starts, position


def grouped_experts(
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    gate_up_scale: torch.Tensor | None = None,
    down_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same sum for many tokens as torch's grouped GEMMs with the Triton sum (the
    kernels' arguments); FP8 weights are dequantized first, for this call only."""
    if gate_up_scale is not None:
        gate_up_proj = fp8_experts.dequantize(gate_up_proj, gate_up_scale, hidden.dtype)
    if down_scale is not None:
        down_proj = fp8_experts.dequantize(down_proj, down_scale, hidden.dtype)
    order, counts, position = sort_by_expert(top_k_index, down_proj.shape[0])
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
    x = hidden[order // top_k_index.shape[1]]
    gate_up = torch._grouped_mm(x, gate_up_proj.transpose(1, 2), offs=offsets)
    gate, up = gate_up.chunk(2, dim=-1)
    act = torch.nn.functional.gelu(gate, approximate="tanh") * up  # as gelu_times
    rows = torch._grouped_mm(act, down_proj.transpose(1, 2), offs=offsets)
    return unpermute_sum(rows, position, top_k_weights)


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
        gate_scale = _row_scale(scale_ptr, expert, rows, row_ok, 2 * inter)
        up_scale = _row_scale(scale_ptr, expert, rows + inter, row_ok, 2 * inter)
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
        row_scale = _row_scale(scale_ptr, tl.program_id(0), rows, row_ok, hidden)
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
            acc *= row_scale[None, :]
        tl.store(out_ptr + pair_rows * hidden + rows[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & row_ok[None, :])  # fmt: skip


def chosen_blocks(chosen, weight: torch.Tensor, plain, fp8):
    """The block sizes asked for, else the tuned ones for the weights' dtype."""
    if chosen is not None:
        return chosen
    return fp8 if weight.dtype == fp8_experts.FP8 else plain


def scale_args(weight: torch.Tensor, scale: torch.Tensor | None) -> dict:
    """The kernels' scale pointer and SCALED flag (unscaled: the weights stand in, unread)."""
    return {
        "scale_ptr": weight if scale is None else scale.contiguous(),
        "SCALED": scale is not None,
    }


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


EXPERTS_SCHEMA = (
    "(Tensor hidden, Tensor top_k_index, Tensor top_k_weights, Tensor gate_up_proj, "
    "Tensor down_proj, Tensor? gate_up_scale=None, Tensor? down_scale=None) -> Tensor"
)


def experts_op(name: str, kernels: Callable[..., torch.Tensor]):
    """`kernels` (the experts' arguments, EXPERTS_SCHEMA) as the op travelbot::`name`, which
    torch.compile keeps whole (its graph calls the kernels)."""

    def op(*args):
        return kernels(*args)

    registered = torch.library.custom_op(
        f"travelbot::{name}", op, mutates_args=(), schema=EXPERTS_SCHEMA
    )

    @registered.register_fake
    def _(hidden, *args):
        return torch.empty_like(hidden)

    return registered


fused_experts_op = experts_op("fused_experts", fused_experts)


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


def reference_experts(hidden, top_k_index, top_k_weights, gate_up_proj, down_proj):
    """The same sum in plain torch, one (token, expert) pair at a time (float32)."""
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for token in range(hidden.shape[0]):
        x = hidden[token].float()
        for expert, weight in zip(top_k_index[token].tolist(), top_k_weights[token], strict=True):
            gate, up = (gate_up_proj[expert].float() @ x).chunk(2)
            act = torch.nn.functional.gelu(gate, approximate="tanh") * up
            out[token] += weight.float() * (down_proj[expert].float() @ act)
    return out


def check_cases(device: torch.device, tokens: int):
    """Small random experts for a self-check: (x, index, weights, stored, expected) for the
    bf16 weights and, where the device has FP8, the FP8 ones; stored is (gate_up, down,
    gate_up_scale, down_scale), expected the float32 reference on the weights used."""
    generator = torch.Generator(device=device).manual_seed(0)
    experts, hidden, inter, top_k = 8, 256, 96, 4

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=device, dtype=torch.bfloat16)

    x, gate_up = randn(tokens, hidden), randn(experts, 2 * inter, hidden) / 8
    down = randn(experts, hidden, inter) / 8
    index = torch.stack(
        [torch.randperm(experts, device=device, generator=generator)[:top_k] for _ in range(tokens)]
    )
    weights = torch.rand(tokens, top_k, device=device, generator=generator)
    stored = [(gate_up, down, None, None)]
    if fp8_experts.supported(device):  # and as FP8 values with row scales
        (gate_up_fp8, gate_up_scale), (down_fp8, down_scale) = map(
            fp8_experts.quantize, (gate_up, down)
        )
        stored.append((gate_up_fp8, down_fp8, gate_up_scale, down_scale))
    for gate_up, down, gate_up_scale, down_scale in stored:
        expected = reference_experts(
            x, index, weights, *(w if s is None else fp8_experts.dequantize(w, s, x.dtype)
                                 for w, s in ((gate_up, gate_up_scale), (down, down_scale)))
        )  # fmt: skip
        yield x, index, weights, (gate_up, down, gate_up_scale, down_scale), expected


def close_enough(got: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((got.float() - expected).abs().max() <= 0.02 * expected.abs().max())


def works_on(device: torch.device) -> bool:
    """Compile and run the kernels once on small random experts, against the reference;
    the router's kernel against torch."""
    for x, index, weights, stored, expected in check_cases(device, tokens=3):
        for kernels in (fused_experts, expert_major_experts):
            if not close_enough(kernels(x, index, weights, *stored), expected):
                return False
    generator = torch.Generator(device=device).manual_seed(1)
    scores = torch.randn(3, 8, generator=generator, device=device, dtype=torch.bfloat16)
    scale = torch.rand(8, device=device, generator=generator) + 0.5
    route_k = 3  # not a power of 2: the kernel's padded slots
    probs, chosen = torch.topk(scores.float().softmax(-1), route_k)
    got_weights, got_chosen = route(scores, scale, route_k)
    expected = probs / probs.sum(-1, keepdim=True) * scale[chosen]
    if not (torch.equal(got_chosen, chosen) and torch.allclose(got_weights, expected, rtol=1e-5)):
        return False
    # the router's choice and the grouping in one kernel: the same as both apart
    weights, chosen, order, counts, starts, position = route_and_group(scores, scale, route_k)
    apart = group_by_expert(got_chosen, 8)
    return (
        torch.equal(chosen, got_chosen)
        and torch.allclose(weights, got_weights, rtol=1e-6)
        and all(torch.equal(a, b) for a, b in zip((counts, starts), apart[1:3], strict=True))
        and torch.equal(order[position.long()], torch.arange(order.numel(), device=device).int())
    )
