"""The Triton experts kernels (small decode batches; prompts' grouped GEMMs, and the sum
after torch's grouped GEMMs, on GPUs), run by Triton's interpreter on the CPU against transformers'
Gemma4TextExperts with the tiny checkpoint's weights and router (and the router's choice
as one kernel against the router); with the weights stored
as FP8, against transformers' experts on the dequantized weights. A subprocess, because
the interpreter is chosen when Triton loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inference.runtime.interpreted import run_interpreted

pytest.importorskip("triton")

SCRIPT = """
import json, sys, torch
from transformers import AutoModelForImageTextToText
from inference.runtime.gemma4 import fp8_experts
from inference.runtime.kernels import moe_prompt
from inference.runtime.kernels.moe import (
    expert_major_experts, fused_experts, group_by_expert, grouped_experts, route,
    route_and_group, routed_expert_major, works_on)
from inference.runtime.kernels.moe_prompt import prompt_experts

# tiles of 16 and 32 pairs (some experts need two); K a multiple of the blocks or not (masks)
PROMPT_BLOCKS = {"gate_up_blocks": (16, 16, 32, 4, 2), "down_blocks": (32, 16, 16, 4, 2)}
UNEVEN_PROMPT_BLOCKS = {"gate_up_blocks": (32, 16, 128, 4, 2), "down_blocks": (16, 16, 64, 4, 2)}

model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
errors = {"self_check": works_on(torch.device("cpu")),
          "prompt_self_check": moe_prompt.works_on(torch.device("cpu"))}
torch.manual_seed(0)
for index in (0, 1):
    layer = model.model.language_model.layers[index]
    experts = layer.experts
    router = layer.router
    # the router's choice as one kernel (decode steps and prompts): the same experts in the
    # same order, the same weights
    for tokens in (1, 9, 40, 64):
        hidden = torch.randn(tokens, experts.hidden_dim, dtype=torch.bfloat16)
        _, weights, chosen = router(hidden)
        scores = router.proj(router.norm(hidden) * router.scale * router.scalar_root_size)
        got_weights, got_chosen = route(scores, router.per_expert_scale, chosen.shape[1])
        errors[f"layer {index}, {tokens} tokens, route: other experts"] = float(
            (got_chosen != chosen).sum())
        errors[f"layer {index}, {tokens} tokens, route weights"] = (
            (got_weights - weights).abs().max() / weights.abs().max()).item()
        # ... and with the grouping in the same kernel (decode steps of expert-major size)
        one_weights, one_chosen, order, counts, starts, position = route_and_group(
            scores, router.per_expert_scale, chosen.shape[1])
        apart = group_by_expert(got_chosen, experts.num_experts)
        flat = one_chosen.reshape(-1)
        wrong = (one_chosen != got_chosen).sum() + (counts != apart[1]).sum()
        wrong += (starts != apart[2]).sum() + (flat[order.long()].diff() < 0).sum()
        wrong += (order.long()[position.long()] != torch.arange(flat.numel())).sum()
        errors[f"layer {index}, {tokens} tokens, route and group: wrong entries"] = float(wrong)
        errors[f"layer {index}, {tokens} tokens, route and group weights"] = (
            (one_weights - got_weights).abs().max() / got_weights.abs().max()).item()
    for tokens in (1, 5):
        hidden = torch.randn(tokens, experts.hidden_dim, dtype=torch.bfloat16)
        _, weights, chosen = layer.router(hidden)
        expected = experts(hidden, chosen, weights).float()
        for blocks in (((16, 32, 4), (16, 16, 4)), ((16, 256, 4), (16, 128, 4))):
            got = fused_experts(hidden, chosen, weights, experts.gate_up_proj,
                                experts.down_proj, gate_up_blocks=blocks[0],
                                down_blocks=blocks[1]).float()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            errors[f"layer {index}, {tokens} tokens, blocks {blocks}"] = error
    for tokens in (23, 64):  # prompts: grouped GEMMs, then the Triton un-permute and sum
        hidden = torch.randn(tokens, experts.hidden_dim, dtype=torch.bfloat16)
        _, weights, chosen = layer.router(hidden)
        expected = experts(hidden, chosen, weights).float()
        got = grouped_experts(hidden, chosen, weights, experts.gate_up_proj,
                              experts.down_proj).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        errors[f"layer {index}, {tokens} tokens, grouped"] = error
        # each expert once for its tokens, 16 at a time (64 tokens: ~16 per expert here)
        got = expert_major_experts(hidden, chosen, weights, experts.gate_up_proj,
                                   experts.down_proj, gate_up_blocks=(16, 16, 32, 4),
                                   down_blocks=(16, 16, 16, 4)).float()
        error = ((got - expected).abs().max() / expected.abs().max()).item()
        errors[f"layer {index}, {tokens} tokens, expert-major"] = error
        # ... from the router's scores, the choice and grouping in one kernel (64 at most)
        if tokens <= 64:
            scores = router.proj(router.norm(hidden) * router.scale * router.scalar_root_size)
            routed = routed_expert_major(hidden, scores, router.per_expert_scale,
                                         chosen.shape[1], experts.gate_up_proj,
                                         experts.down_proj).float()
            error = ((routed - expected).abs().max() / expected.abs().max()).item()
            errors[f"layer {index}, {tokens} tokens, expert-major from the scores"] = error
        # prompts' Triton grouped GEMMs
        for name, blocks in (("even", PROMPT_BLOCKS), ("uneven", UNEVEN_PROMPT_BLOCKS)):
            got = prompt_experts(hidden, chosen, weights, experts.gate_up_proj,
                                 experts.down_proj, **blocks).float()
            error = ((got - expected).abs().max() / expected.abs().max()).item()
            errors[f"layer {index}, {tokens} tokens, prompt kernels, {name} K"] = error
    # FP8 values with row scales: the kernels against transformers' experts on the
    # dequantized weights (decode sizes per pair and expert-major; a prompt's grouped path)
    (gate_up, gate_up_scale), (down, down_scale) = map(
        fp8_experts.quantize, (experts.gate_up_proj, experts.down_proj))
    dequantized = {"gate_up_proj": fp8_experts.dequantize(gate_up, gate_up_scale, torch.bfloat16),
                   "down_proj": fp8_experts.dequantize(down, down_scale, torch.bfloat16)}
    for tokens in (3, 40):
        hidden = torch.randn(tokens, experts.hidden_dim, dtype=torch.bfloat16)
        _, weights, chosen = layer.router(hidden)
        expected = torch.func.functional_call(experts, dequantized, (hidden, chosen, weights))
        expected = expected.float()
        stored = (gate_up, down, gate_up_scale, down_scale)
        for name, got in (
            ("fused", fused_experts(hidden, chosen, weights, *stored)),
            ("expert-major", expert_major_experts(
                hidden, chosen, weights, *stored, gate_up_blocks=(16, 16, 32, 4),
                down_blocks=(16, 16, 16, 4))),
            ("grouped", grouped_experts(hidden, chosen, weights, *stored)),
            ("prompt kernels", prompt_experts(hidden, chosen, weights, *stored,
                                              **PROMPT_BLOCKS)),
        ):
            error = ((got.float() - expected).abs().max() / expected.abs().max()).item()
            errors[f"layer {index}, {tokens} tokens, fp8 {name}"] = error
# pairs grouped by expert in one kernel: counts and starts as torch's, every pair once,
# each expert's pairs together in expert order (600 x 8 pairs: past one program, torch's sort)
for tokens, num_experts, k in ((1, 8, 4), (37, 128, 8), (64, 128, 8), (600, 128, 8)):
    ids = torch.stack([torch.randperm(num_experts)[:k] for _ in range(tokens)])
    order, counts, starts, position = group_by_expert(ids, num_experts)
    flat, expected = ids.reshape(-1), torch.bincount(ids.reshape(-1), minlength=num_experts)
    wrong = (counts.long() != expected).sum()
    wrong += (starts.long() != expected.cumsum(0) - expected).sum()
    wrong += (order.long()[position.long()] != torch.arange(flat.numel())).sum()
    wrong += (flat[order.long()].diff() < 0).sum()
    errors[f"group by expert, {tokens}x{k} pairs of {num_experts}: wrong entries"] = float(wrong)
# the prompt kernels' tile table against torch, experts without pairs included
counts = torch.tensor([17, 0, 33, 0, 1, 16, 0, 64], dtype=torch.int32)
starts, tile_expert, first_tile = moe_prompt.tile_table(counts, 16, int(counts.sum()))
tiles = (counts + 15) // 16
ends = torch.cumsum(tiles, 0)
expected = torch.searchsorted(ends, torch.arange(tile_expert.shape[0]), right=True)
errors["tile table: wrong entries"] = float(
    (starts != torch.cumsum(counts, 0) - counts).sum() + (first_tile != ends - tiles).sum()
    + (tile_expert != expected).sum())
print(json.dumps(errors))
"""


def test_fused_experts_equal_transformers_experts(tiny_model_dir: Path) -> None:
    errors = run_interpreted(SCRIPT, str(tiny_model_dir))
    assert errors.pop("self_check") is True
    assert errors.pop("prompt_self_check") is True
    assert len(errors) == 81
    for case, error in errors.items():
        assert error < (1e-5 if "route" in case else 0.02), f"{case}: error {error:.6f}"


COMPILED_SCRIPT = """
import json, torch
from inference.runtime.kernels import moe  # registers the travelbot ops
from inference.runtime.kernels.moe import check_cases

# the op the compiled layers call for a decode step of expert-major size, traced by dynamo
# and run through its fake implementation (aot_eager), against the eager call
result = {}
for x, index, weights, stored, expected in check_cases(torch.device("cpu"), tokens=5):
    scores = torch.randn(x.shape[0], stored[0].shape[0]).to(torch.bfloat16)
    scale = torch.rand(stored[0].shape[0]) + 0.5
    args = (x, scores, scale, index.shape[1], *stored)
    op = torch.ops.travelbot.routed_expert_major
    eager = op(*args)
    compiled = torch.compile(lambda *a: op(*a), backend="aot_eager", dynamic=True)(*args)
    name = "fp8" if stored[2] is not None else "bf16"
    result[name] = (compiled.float() - eager.float()).abs().max().item()
print(json.dumps(result))
"""


def test_the_routed_experts_op_runs_compiled() -> None:
    result = run_interpreted(COMPILED_SCRIPT)
    assert result and all(error == 0.0 for error in result.values()), result
