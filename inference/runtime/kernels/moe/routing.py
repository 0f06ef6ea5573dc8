"""The router's choice as one kernel, the (token, expert) pairs grouped by expert, and the
weighted sum that puts each token's rows back together; `grouped_experts`, torch's grouped
GEMMs with that sum (where the prompts' Triton GEMMs fail, and as their baseline)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from inference.runtime.gemma4 import fp8_experts
from inference.runtime.kernels.moe.common import routed_pair


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
def _unpermute_sum_kernel(
    rows_ptr, position_ptr, weight_ptr, out_ptr, hidden,
    TOP_K: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < hidden
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in tl.static_range(TOP_K):
        _, row, routing = routed_pair(position_ptr, weight_ptr, token, k, TOP_K)
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
