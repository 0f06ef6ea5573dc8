"""Faster stand-ins the batching engine installs into transformers' Gemma 4 modules.

- Decode attention: one query per sequence against the slot cache, as two batched
  matmuls with grouped KV heads (SDPA's kernels are slow for q_len 1 with a mask and
  head_dim 512). Prompts (q_len > 1) still go to SDPA.
- Prompt attention of sliding layers (`prompt_attention`): Gemma 4's mask there is causal,
  or both tokens in the same image, within the window. A mask makes SDPA fall back to its
  memory-efficient kernel, slower than flash (docs/performance.md); instead, one
  causal flash attention for all tokens, then each image's tokens again against everything
  up to the image's end (consecutive prompts with an image at the same place in one
  call). The runner passes the images' spans (`StepAttention`). On GPUs, where its start-up
  check passes, prompts of all layers go to one Triton kernel instead
  (kernels.prompt_attention: the runner passes `visible_ends` of the spans).
- RMSNorm, in the text layers and the vision tower: torch's fused rms_norm in the
  activations' dtype (one kernel instead of five plus two casts) on GPUs; its bf16 rounding
  differs slightly from transformers'. In the vision tower's compiled layers transformers'
  norm became a pointwise kernel that sums each head's 72 values again for every element
  (q/k norm and 2D RoPE); the fused norm sums them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward


class KeptPrefix(NamedTuple):
    """The prefix the sliding layers keep once for all rows, during a decode step."""

    keys: list  # per layer [1, Hkv, P, D] (None: a global layer)
    values: list
    kernel: bool  # few rows read it through kernels.decode_attention


@dataclass(frozen=True)
class StepAttention:
    """What attention needs to know of one forward pass beyond its tensors. The runner
    passes it as the model call's `step` keyword; transformers hands it to every layer's
    attention function (`Attention`). A prefill gives `spans` (None: no unmasked prompt
    attention), with the Triton kernel its `ends`, and `prefix_kv` where the layers' caches
    keep a prefix apart; a decode step the sliding layers' `kept` prefix."""

    # per prompt row, the (start, end) token spans of its images
    spans: list[list[tuple[int, int]]] | None = None
    # ... as kernels.prompt_attention's visible_ends of them, on the device
    ends: torch.Tensor | None = None
    # per layer, the keys and values of the prefix the prompts follow, kept apart
    # (prefix_cache.AfterPrefixLayer): the kernel reads them there
    prefix_kv: list | None = None
    kept: KeptPrefix | None = None


# decode steps of at least this many rows read the kept prefix as matmuls over all rows'
# queries (once), fewer rows through kernels.decode_attention (one launch instead of seven;
# docs/performance.md)
PREFIX_MATMUL_ROWS = 16


def vision_spans(token_types: list[int]) -> list[tuple[int, int]]:
    """Runs of image (1) or audio (2) tokens: transformers' bidirectional blocks."""
    spans, start = [], None
    for index, kind in enumerate([*token_types, 0]):
        if kind in (1, 2) and start is None:
            start = index
        elif kind not in (1, 2) and start is not None:
            spans.append((start, index))
            start = None
    return spans


def visible_ends(spans: list[list[tuple[int, int]]], prefix: int, length: int) -> torch.Tensor:
    """[B, L] int32 (CPU): for each prompt token after a prefix of `prefix` positions, the
    key position its attention ends before: its own + 1, or its image's end."""
    ends = torch.arange(prefix + 1, prefix + length + 1, dtype=torch.int32).repeat(len(spans), 1)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            ends[row, start:end] = prefix + end
    return ends


def prompt_attention(query, key, value, spans: list[list[tuple[int, int]]], scaling):
    """query [B, Hq, L, D], key/value [B, Hkv, P + L, D] of right-padded prompts after a
    shared prefix of P positions (P may be 0); each token sees the prefix and the tokens
    before it, and an image's tokens see the whole image → [B, L, Hq, D]. `spans` count
    from the first query."""
    prefix = key.shape[2] - query.shape[2]
    if prefix:
        output = causal_after_prefix(query, key, value, scaling)
    else:
        output = F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
    for rows, (start, end) in span_runs(spans):
        output[rows, :, start:end] = F.scaled_dot_product_attention(
            query[rows, :, start:end],
            key[rows, :, : prefix + end],
            value[rows, :, : prefix + end],
            scale=scaling,
            enable_gqa=True,
        )
    return output.transpose(1, 2).contiguous()


def span_runs(spans: list[list[tuple[int, int]]]) -> list[tuple[slice, tuple[int, int]]]:
    """Each image span with the run of consecutive rows that have it too: prompts built
    from one template put their photo at the same place, so a batch of them attends in one
    call instead of one per photo (8 photos: 25 calls a prefill instead of 200)."""
    runs: list[tuple[slice, tuple[int, int]]] = []
    open_runs: dict[tuple[int, int], int] = {}  # span → first row of its run so far
    for row, row_spans in enumerate([*spans, []]):
        for span in [s for s in open_runs if s not in row_spans]:
            runs.append((slice(open_runs.pop(span), row), span))
        for span in row_spans:
            open_runs.setdefault(span, row)
    return runs


def causal_after_prefix(query, key, value, scaling):
    """query [B, Hq, L, D] at the last L of the key/value positions [B, Hkv, S, D]: each
    sees the keys up to its own position → [B, Hq, L, D]. On GPUs one variable-length flash
    attention call (its causal mask is aligned to the keys' end, and it groups KV heads)."""
    batch, heads, length, head_dim = query.shape
    total = key.shape[2]
    if not varlen_flash_works(query):
        mask = torch.ones(length, total, dtype=torch.bool, device=query.device)
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask.tril(total - length), scale=scaling,
            enable_gqa=True,
        )  # fmt: skip
    q = query.transpose(1, 2).reshape(batch * length, heads, head_dim)
    k, v = (t.transpose(1, 2).reshape(batch * total, -1, head_dim) for t in (key, value))
    # made on the device: a copy from the CPU would make the CPU wait for the GPU
    starts_q = torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=q.device)
    starts_k = torch.arange(0, (batch + 1) * total, total, dtype=torch.int32, device=q.device)
    output = flash_varlen(q, k, v, starts_q, starts_k, length, total, causal=True, scale=scaling)
    return output.view(batch, length, heads, head_dim).transpose(1, 2)


def flash_varlen(q, k, v, starts_q, starts_k, longest_q, longest_k, *, causal, scale):
    """One variable-length flash attention call over packed sequences: q [Tq, Hq, D], k/v
    [Tk, Hkv, D]; sequence i is rows starts[i]:starts[i + 1] (int32, on the device). A
    causal mask is aligned to the end of each key sequence → [Tq, Hq, D]."""
    return torch.ops.aten._flash_attention_forward(
        q, k, v, starts_q, starts_k, longest_q, longest_k, 0.0, causal, False, scale=scale
    )[0]


def varlen_flash_works(query: torch.Tensor) -> bool:
    """Flash attention's kernels: Ampere or newer, half precision, head_dim ≤ 256 in 8s."""
    head_dim = query.shape[-1]
    return (
        query.is_cuda
        and torch.cuda.get_device_capability(query.device) >= (8, 0)
        and query.dtype in (torch.float16, torch.bfloat16)
        and head_dim % 8 == 0
        and head_dim <= 256
    )


class Attention:
    """The language model's attention function, registered with transformers by the patch
    (gemma4.patch). `probs`, `probs_after_prefix`: the decode step's masked softmax
    (`masked_softmax` and `masked_softmax_after_prefix`, compiled, or kernels.softmax's).

    A decode step (query [B, Hq, 1, D], key/value [B, Hkv, L, D], bool mask [B, 1, 1, L] →
    [B, 1, Hq, D]) runs as two batched matmuls (over FP8 keys and values:
    kernels.decode_attention on GPUs); a prompt, when the step gives visible ends, as
    kernels.prompt_attention (sliding layers under the image rule within their window, global
    layers causal: Gemma 4 has no image rule there; a cached prefix's keys and values read
    where they are kept when the step gives them apart); else a prompt of a sliding layer
    within the window as `prompt_attention` when the step gives image spans; any other prompt
    as transformers' SDPA. A decode step of a sliding layer that keeps a prefix once for all
    rows (the step's `kept`) reads it before each row's own keys: as
    `attention_after_prefix`, or kernels.decode_attention for a few rows on GPUs."""

    def __init__(self, probs=None, probs_after_prefix=None) -> None:
        self.probs = probs or masked_softmax
        self.probs_after_prefix = probs_after_prefix or masked_softmax_after_prefix

    def __call__(
        self,
        module,
        query,
        key,
        value,
        attention_mask,
        scaling=None,
        dropout=0.0,
        step: StepAttention | None = None,
        **kw,
    ):
        step = step or StepAttention()
        prefix = step.prefix_kv[module.layer_idx] if step.prefix_kv is not None else None
        if query.shape[2] > 1 and step.ends is not None:
            from inference.runtime.kernels import prompt_attention as kernel  # needs Triton

            scale = 1.0 if scaling is None else scaling
            window = getattr(module, "sliding_window", None)
            ends = step.ends if window else None  # global layers: causal
            output = kernel.prompt_attention(query, key, value, ends, scale, prefix, window or 0)
            return output, None
        if prefix is not None:
            raise ValueError("a prefix's keys and values apart need kernels.prompt_attention")
        if query.shape[2] == 1 and isinstance(attention_mask, torch.Tensor):
            return self.decode(module, query, key, value, attention_mask, scaling, step.kept), None
        window = getattr(module, "sliding_window", None)
        if step.spans is not None and window and key.shape[2] <= window and query.shape[2] > 1:
            return prompt_attention(query, key, value, step.spans, scaling), None
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kw
        )

    def decode(self, module, query, key, value, mask, scaling, kept_prefix: KeptPrefix | None):
        scale = 1.0 if scaling is None else scaling
        kept = None  # the prefix this layer keeps once for all rows, if any
        if kept_prefix is not None and kept_prefix.keys[module.layer_idx] is not None:
            kept = (kept_prefix.keys[module.layer_idx], kept_prefix.values[module.layer_idx])
        fp8 = key.dtype != query.dtype  # FP8 keys and values (RuntimeConfig.fp8_kv_cache)
        few = kept is not None and kept_prefix.kernel and query.shape[0] < PREFIX_MATMUL_ROWS
        if key.is_cuda and (fp8 or few):
            from inference.runtime.kernels import decode_attention as kernel  # needs Triton

            return kernel.decode_attention(query, key, value, mask, scale, kept)
        if fp8:  # exact: FP8 ⊂ bf16
            key, value = key.to(query.dtype), value.to(query.dtype)
        if kept is not None:
            return attention_after_prefix(
                query, key, value, kept, mask, scale, self.probs_after_prefix
            )
        batch, num_heads, _, head_dim = query.shape
        num_kv_heads = key.shape[1]
        grouped = query.view(batch, num_kv_heads, num_heads // num_kv_heads, head_dim)
        scores = torch.matmul(grouped, key.transpose(-1, -2))
        output = torch.matmul(self.probs(scores, mask, scale), value)  # [B, Hkv, G, D]
        return output.reshape(batch, 1, num_heads, head_dim)


def attention_after_prefix(
    query, key, value, prefix, mask, scaling: float, probs=None
) -> torch.Tensor:
    """A decode step (query [B, Hq, 1, D]) over a prefix kept once for all rows (keys and
    values [1, Hkv, P, D]) and then each row's own keys and values [B, Hkv, L, D], under
    mask [B, 1, 1, P + L]: the prefix's part as one matmul per KV head over every row's
    queries (the prefix read once, not once a row), one softmax over both parts (`probs`:
    a `masked_softmax_after_prefix`)."""
    batch, num_heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    group = num_heads // kv_heads
    grouped = query.reshape(batch, kv_heads, group, head_dim)
    by_head = grouped.transpose(0, 1).reshape(kv_heads, batch * group, head_dim)
    kept_scores = torch.matmul(by_head, prefix[0][0].transpose(-1, -2))  # [Hkv, B·G, P]
    own_scores = torch.matmul(grouped, key.transpose(-1, -2))  # [B, Hkv, G, L]
    probs = probs or masked_softmax_after_prefix
    kept_probs, own_probs = probs(kept_scores, own_scores, mask, scaling)
    output = torch.matmul(kept_probs, prefix[1][0]).view(kv_heads, batch, group, head_dim)
    output = output.transpose(0, 1) + torch.matmul(own_probs, value)
    return output.reshape(batch, 1, num_heads, head_dim)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """softmax(scores · scaling) over the attended positions, in float32, back in the
    scores' dtype."""
    logits = scores.float() * scaling
    return logits.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(scores.dtype)


def masked_softmax_after_prefix(kept_scores, own_scores, mask, scaling: float):
    """masked_softmax over a kept prefix's scores [Hkv, B·G, P] (per KV head, every row's
    queries) and the rows' own [B, Hkv, G, L] as one row each, mask [B, 1, 1, P + L] → the
    probabilities in the same two layouts."""
    kv_heads, rows, kept = kept_scores.shape
    batch, _, group, _ = own_scores.shape
    by_row = kept_scores.view(kv_heads, batch, group, kept).transpose(0, 1)
    probs = masked_softmax(torch.cat([by_row, own_scores], dim=-1), mask, scaling)
    return probs[..., :kept].transpose(0, 1).reshape(kv_heads, rows, kept), probs[..., kept:]


def fused_rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """One kernel in the input's dtype (it accumulates in float32), no casts around it."""
    weight = self.weight.to(hidden_states.dtype) if self.with_scale else None
    return torch.nn.functional.rms_norm(hidden_states, (hidden_states.shape[-1],), weight, self.eps)
