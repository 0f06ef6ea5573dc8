"""Gemma 4 text decoder layers as two compilable regions around the attention.

transformers' layer runs ~80 small kernels per decode step (norms in float32 with casts,
RoPE, router softmax/top-k, MoE gathers, residual adds). Here the work before the KV
cache (norm, q/k/v projections and norms, RoPE) and after the attention (o_proj, norms,
dense MLP, router, experts, residuals) are plain functions of the layer's own modules,
so `torch.compile` can fuse each into a few kernels; the cache update and the attention
stay eager, between them. The arithmetic is transformers' own, in the same order.
One compiled function serves all 30 layers (modules are inputs, not constants).
The vision encoder's layers have no cache, so their whole forward is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gemma4.modeling_gemma4 import (
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from inference.runtime.gemma4 import fp8_experts

# Decode steps of up to this many tokens run the experts as per-pair Triton kernels;
# beyond it they lose to the expert-major ones, which lose to the prompts' grouped GEMMs
# beyond EXPERT_MAJOR_TOKENS (docs/performance.md, "Decode steps").
FUSED_EXPERTS_TOKENS = 16
EXPERT_MAJOR_TOKENS = 64


@dataclass(frozen=True)
class ExpertKernels:
    """Which experts code a step of n tokens runs: up to `fused_max_tokens` the per-pair
    Triton kernels (kernels.moe), up to `expert_major_max_tokens` the expert-major ones
    (each expert read once), more tokens `prompt` (kernels.moe_prompt's grouped GEMMs or
    kernels.moe.grouped_experts) with the kernels' arguments. `ExpertKernels()`:
    transformers' experts for all (no Triton)."""

    fused_max_tokens: int = 0
    expert_major_max_tokens: int = 0
    prompt: Callable | None = None
    prompt_is_triton: bool = False  # (reported) `prompt` is kernels.moe_prompt's

    @classmethod
    def triton(cls, *, prompt_gemms: bool) -> ExpertKernels:
        """The Triton kernels (kernels.moe; `prompt_gemms`: kernels.moe_prompt for prompts,
        else torch's grouped_mm and the Triton sum)."""
        from inference.runtime.kernels.moe import grouped_experts  # needs Triton
        from inference.runtime.kernels.moe_prompt import prompt_experts_op

        return cls(
            fused_max_tokens=FUSED_EXPERTS_TOKENS,
            expert_major_max_tokens=EXPERT_MAJOR_TOKENS,
            prompt=prompt_experts_op if prompt_gemms else grouped_experts,
            prompt_is_triton=prompt_gemms,
        )


def fuse_projections(layer) -> None:
    """q/k/v as one matmul, and the dense MLP's gate/up as one: one weight read and one
    kernel instead of three or two. The original weights become views of the fused one,
    so memory stays the same and transformers' own forward still works."""
    attention = layer.self_attn
    projections = [attention.q_proj, attention.k_proj]
    if attention.v_proj is not None:
        projections.append(attention.v_proj)
    attention.register_buffer("qkv_weight", _fuse(projections), persistent=False)
    mlp = layer.mlp
    mlp.register_buffer("gate_up_weight", _fuse([mlp.gate_proj, mlp.up_proj]), persistent=False)


def _fuse(linears) -> torch.Tensor:
    if any(linear.bias is not None for linear in linears):
        raise ValueError("projections with bias are not fused")
    fused = torch.cat([linear.weight.detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight.data = fused[start : start + rows]
        start += rows
    return fused


def attention_inputs(layer, hidden_states, cos, sin):
    """Pre-norm, q/k/v projections, q/k/v norms and RoPE: q, k, v as [B, heads, S, D]."""
    attention = layer.self_attn
    normed = layer.input_layernorm(hidden_states)
    shape = (*normed.shape[:-1], -1, attention.head_dim)
    sizes = [attention.q_proj.out_features, attention.k_proj.out_features]
    if attention.v_proj is not None:
        sizes.append(attention.v_proj.out_features)
    projected = torch.nn.functional.linear(normed, attention.qkv_weight).split(sizes, dim=-1)
    query = attention.q_norm(projected[0].view(shape))
    query = apply_rotary_pos_emb(query, cos, sin, unsqueeze_dim=2).transpose(1, 2)
    key = projected[1].view(shape)
    value = projected[2].view(shape) if attention.v_proj is not None else key
    key = apply_rotary_pos_emb(attention.k_norm(key), cos, sin, unsqueeze_dim=2).transpose(1, 2)
    value = attention.v_norm(value).transpose(1, 2)
    return query, key, value


def dense_mlp(mlp, hidden):
    gate, up = torch.nn.functional.linear(hidden, mlp.gate_up_weight).chunk(2, dim=-1)
    return mlp.down_proj(mlp.act_fn(gate) * up)


def feed_forward(layer, attention_output, residual, *, kernels: ExpertKernels):
    """o_proj and everything after the attention: dense MLP and experts side by side."""
    hidden = layer.post_attention_layernorm(layer.self_attn.o_proj(attention_output))
    hidden = residual + hidden
    residual = hidden
    dense = dense_mlp(layer.mlp, layer.pre_feedforward_layernorm(hidden))
    dense = layer.post_feedforward_layernorm_1(dense)
    flat = residual.reshape(-1, residual.shape[-1])
    normed = layer.pre_feedforward_layernorm_2(flat)
    if kernels.fused_max_tokens < flat.shape[0] <= kernels.expert_major_max_tokens:
        experts = routed_experts(layer.router, layer.experts, flat, normed)
    else:
        top_k_weights, top_k_index = choose_experts(layer.router, flat, kernels)
        experts = run_experts(layer.experts, normed, top_k_index, top_k_weights, kernels)
    experts = layer.post_feedforward_layernorm_2(experts.reshape(residual.shape))
    hidden = residual + layer.post_feedforward_layernorm(dense + experts)
    return hidden * layer.layer_scalar


def router_scores(router, flat):
    """Gemma4TextRouter's scores, before its softmax and top-k."""
    return router.proj(router.norm(flat) * router.scale * router.scalar_root_size)


def routed_experts(router, experts, flat, hidden):
    """A decode step of expert-major size (Triton kernels): the router's choice, the
    pairs' grouping by expert (one kernel for both), then the experts."""
    stored = (experts.gate_up_proj, experts.down_proj, *fp8_experts.scales(experts))
    top_k = router.config.top_k_experts
    return torch.ops.travelbot.routed_expert_major(
        hidden, router_scores(router, flat), router.per_expert_scale, top_k, *stored
    )


def choose_experts(router, flat, kernels: ExpertKernels):
    """Gemma4TextRouter's (weights, experts); where the Triton kernels run, its softmax,
    top-k and weighting as one kernel instead of four (in a prompt also fewer ops for the
    CPU to launch)."""
    if kernels.prompt is None:  # no Triton kernels
        _, weights, index = router(flat)
        return weights, index
    scores = router_scores(router, flat)
    return torch.ops.travelbot.route(scores, router.per_expert_scale, router.config.top_k_experts)


def run_experts(experts, hidden, top_k_index, top_k_weights, kernels: ExpertKernels):
    tokens = hidden.shape[0]
    stored = (experts.gate_up_proj, experts.down_proj, *fp8_experts.scales(experts))
    if tokens <= kernels.fused_max_tokens:
        return torch.ops.travelbot.fused_experts(hidden, top_k_index, top_k_weights, *stored)
    if kernels.prompt is not None:  # (expert-major sizes: routed_experts)
        return kernels.prompt(hidden, top_k_index, top_k_weights, *stored)
    weights = fp8_experts.dequantized(experts)  # FP8: this layer's, for this prompt only
    if not weights:
        return experts(hidden, top_k_index, top_k_weights)
    return torch.func.functional_call(experts, weights, (hidden, top_k_index, top_k_weights))


def layer_forward(
    layer,
    regions: tuple[Callable, Callable],
    hidden_states,
    per_layer_input=None,
    shared_kv_states=None,
    position_embeddings=None,
    attention_mask=None,
    position_ids=None,
    past_key_values=None,
    **kwargs,
):
    """Same signature and result as Gemma4TextDecoderLayer.forward (for supported layers)."""
    before, after = regions
    attention = layer.self_attn
    query, key, value = before(layer, hidden_states, *position_embeddings)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, attention.layer_idx)
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(
        attention.config._attn_implementation, eager_attention_forward
    )
    output, _ = interface(
        attention,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0,
        scaling=attention.scaling,
        sliding_window=attention.sliding_window,
        **kwargs,
    )
    output = output.reshape(*hidden_states.shape[:-1], -1)
    return after(layer, output, hidden_states)


def is_supported(layer) -> bool:
    """Layers of the 26B-A4B kind: MoE block, no shared KV, no per-layer inputs."""
    attention = layer.self_attn
    return bool(
        layer.enable_moe_block
        and not layer.hidden_size_per_layer_input
        and not attention.is_kv_shared_layer
        and not attention.store_full_length_kv
    )
