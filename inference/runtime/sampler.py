"""Per-row sampling for a batch: greedy rows take the argmax, others temperature/top-k/top-p."""

from __future__ import annotations

import torch

MAX_TOP_K = 256  # top_k 0 ("no limit") samples among the 256 most likely tokens


def sample(
    logits: torch.Tensor,
    temperatures: torch.Tensor,
    top_ps: torch.Tensor,
    top_ks: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Token ids [B] from float logits [B, V]; parameter tensors are [B] on logits' device."""
    greedy = logits.argmax(dim=-1)
    if bool((temperatures == 0).all()):
        return greedy
    top_ks = torch.where(top_ks <= 0, MAX_TOP_K, top_ks).clamp(max=MAX_TOP_K)
    k = min(int(top_ks.max()), logits.shape[-1])
    values, indices = logits.topk(k, dim=-1)  # sorted, descending
    values = values / temperatures.clamp(min=1e-5)[:, None]
    ranks = torch.arange(k, device=logits.device)[None, :]
    values = values.masked_fill(ranks >= top_ks[:, None], float("-inf"))
    probs = values.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    probs = probs.masked_fill((before > top_ps[:, None]) & (ranks > 0), 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)
    sampled = indices.gather(-1, choice)[:, 0]
    return torch.where(temperatures == 0, greedy, sampled)
