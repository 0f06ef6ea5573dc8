"""Per-row sampling for a batch: greedy rows take the argmax, others temperature/top-k/top-p.
No host synchronization: parameters come from the CPU, so the engine can launch the next
decode step before this one's tokens are read back."""

from __future__ import annotations

import torch

from inference.types import Sampling

MAX_TOP_K = 256  # top_k 0 ("no limit") samples among the 256 most likely tokens


def sample(
    logits: torch.Tensor, params: list[Sampling], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Token ids [B] (on logits' device) from float logits [B, V], one Sampling per row."""
    greedy = logits.argmax(dim=-1)
    if all(p.temperature == 0 for p in params):
        return greedy
    top_ks = [MAX_TOP_K if p.top_k <= 0 else min(p.top_k, MAX_TOP_K) for p in params]
    k = min(max(top_ks), logits.shape[-1])
    rows = torch.tensor(
        [[p.temperature for p in params], [p.top_p for p in params], top_ks],
        dtype=torch.float32,
    ).to(logits.device, non_blocking=True)
    temperatures, top_ps, top_ks_t = rows[0], rows[1], rows[2]
    values, indices = logits.topk(k, dim=-1)  # sorted, descending
    values = values / temperatures.clamp(min=1e-5)[:, None]
    ranks = torch.arange(k, device=logits.device)[None, :]
    values = values.masked_fill(ranks >= top_ks_t[:, None], float("-inf"))
    probs = values.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    probs = probs.masked_fill((before > top_ps[:, None]) & (ranks > 0), 0.0)
    # argmax(p / E) with E ~ Exp(1) draws from p, without multinomial's checks
    noise = torch.empty_like(probs).exponential_(generator=generator)
    choice = (probs / noise).argmax(dim=-1, keepdim=True)
    sampled = indices.gather(-1, choice)[:, 0]
    return torch.where(temperatures == 0, greedy, sampled)
