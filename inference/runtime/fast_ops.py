"""Faster stand-ins the batching engine installs into transformers' Gemma 4 modules.

- Decode attention: one query per sequence against the slot cache, as two batched
  matmuls with grouped KV heads (SDPA's kernels are slow for q_len 1 with a mask and
  head_dim 512). Prompts (q_len > 1) still go to SDPA.
- RMSNorm: torch's fused rms_norm in the activations' dtype (one kernel instead of five
  plus two casts) on GPUs; its bf16 rounding differs slightly from transformers'.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "travelbot_decode"


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
    """query [B, Hq, 1, D], key/value [B, Hkv, L, D], bool mask [B, 1, 1, L] → [B, 1, Hq, D]."""
    if query.shape[2] != 1 or not isinstance(attention_mask, torch.Tensor):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )
    batch, num_heads, _, head_dim = query.shape
    num_kv_heads = key.shape[1]
    grouped = query.view(batch, num_kv_heads, num_heads // num_kv_heads, head_dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float()
    if scaling is not None and scaling != 1.0:
        scores = scores * scaling
    scores = scores.masked_fill(~attention_mask, float("-inf"))
    probs = scores.softmax(dim=-1).to(value.dtype)
    output = torch.matmul(probs, value)  # [B, Hkv, G, D]
    return output.reshape(batch, 1, num_heads, head_dim), None


def install(model, *, fused_norms: bool):
    """Switch the language model to the fast paths; returns a function that undoes it."""
    AttentionInterface.register(ATTENTION_NAME, decode_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # prompts keep SDPA's masks
    text_config = model.config.get_text_config()
    previous = text_config._attn_implementation
    text_config._attn_implementation = ATTENTION_NAME
    norms = []
    if fused_norms:
        for module in model.model.language_model.modules():
            if type(module).__name__ == "Gemma4RMSNorm":
                module.forward = _fused_rms_norm_forward.__get__(module)
                norms.append(module)

    def undo() -> None:
        text_config._attn_implementation = previous
        for module in norms:
            del module.forward

    return undo


def _fused_rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """One kernel in the input's dtype (it accumulates in float32), no casts around it."""
    weight = self.weight.to(hidden_states.dtype) if self.with_scale else None
    return torch.nn.functional.rms_norm(hidden_states, (hidden_states.shape[-1],), weight, self.eps)
