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

The family, one module each: `routing` (the router's kernel, grouping pairs by expert,
the un-permuting sum, torch's grouped GEMMs), `per_pair` (few tokens), `expert_major`
(more tokens), `common` (what they share, and the float32 reference). Importing this
package registers their torch ops (travelbot::route, unpermute_sum, fused_experts,
routed_expert_major).
"""

from __future__ import annotations

import torch

from inference.runtime.kernels.moe.common import (
    check_cases,
    chosen_blocks,
    close_enough,
    experts_op,
    gelu_times,
    reference_experts,
    scale_args,
)
from inference.runtime.kernels.moe.expert_major import expert_major_experts, routed_expert_major
from inference.runtime.kernels.moe.per_pair import fused_experts
from inference.runtime.kernels.moe.routing import (
    group_by_expert,
    grouped_experts,
    route,
    route_and_group,
    sort_by_expert,
    unpermute_sum,
)

__all__ = [
    "check_cases",
    "chosen_blocks",
    "close_enough",
    "expert_major_experts",
    "experts_op",
    "fused_experts",
    "gelu_times",
    "group_by_expert",
    "grouped_experts",
    "reference_experts",
    "route",
    "route_and_group",
    "routed_expert_major",
    "scale_args",
    "sort_by_expert",
    "unpermute_sum",
    "works_on",
]


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
