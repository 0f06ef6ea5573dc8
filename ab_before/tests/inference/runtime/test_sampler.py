"""The sampler on scripted logits (no model): greedy rows, top-k/top-p limits, the seed."""

from __future__ import annotations

import torch

from inference import Sampling
from inference.runtime.sampler import sample


def logits(rows: int = 4, vocab: int = 1000, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_rows_take_the_argmax_and_sampled_rows_stay_in_their_top_k() -> None:
    scores = logits()
    params = [Sampling(temperature=0), Sampling(top_k=3), Sampling(temperature=0), Sampling()]
    generator = torch.Generator().manual_seed(1)
    for _ in range(50):
        tokens = sample(scores, params, generator)
        assert tokens[0] == scores[0].argmax() and tokens[2] == scores[2].argmax()
        assert tokens[1] in scores[1].topk(3).indices
        assert tokens[3] in scores[3].topk(64).indices


def test_top_k_1_and_a_tiny_top_p_are_greedy() -> None:
    scores = logits()
    generator = torch.Generator().manual_seed(2)
    for params in ([Sampling(top_k=1)] * 4, [Sampling(top_p=1e-6)] * 4):
        assert torch.equal(sample(scores, params, generator), scores.argmax(dim=-1))


def test_the_same_seed_draws_the_same_tokens_and_draws_follow_the_distribution() -> None:
    scores = torch.log(torch.tensor([[0.7, 0.2, 0.1] + [1e-9] * 5] * 2000))
    params = [Sampling(temperature=1.0, top_p=1.0, top_k=0)] * 2000
    first = sample(scores, params, torch.Generator().manual_seed(3))
    assert torch.equal(first, sample(scores, params, torch.Generator().manual_seed(3)))
    share = torch.bincount(first, minlength=8).float() / 2000
    assert abs(share[0] - 0.7) < 0.05 and abs(share[1] - 0.2) < 0.04 and share[3:].sum() == 0
