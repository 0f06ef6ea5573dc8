"""The prefix cache's bookkeeping: least recently used entries go first, within a budget."""

from __future__ import annotations

import torch

from inference.runtime.prefix_cache import PrefixCache, prompt_cache


def test_least_recently_used_prefixes_leave_first_within_the_token_budget() -> None:
    cache = PrefixCache(max_tokens=10)
    a, b, c = (1, 2, 3, 4), (5, 6, 7), (8, 9, 10, 11)
    cache.put(a, ["kv a"])
    cache.put(b, ["kv b"])
    assert cache.get(a) == ["kv a"]  # a is now the most recently used
    cache.put(c, ["kv c"])  # 4 + 3 + 4 > 10: b leaves
    assert cache.get(b) is None and cache.get(a) == ["kv a"] and cache.get(c) == ["kv c"]
    assert cache.stats() == {"entries": 2, "tokens": 8, "hits": 3, "misses": 1}


def test_a_prefix_longer_than_the_budget_is_not_kept() -> None:
    cache = PrefixCache(max_tokens=3)
    assert not cache.fits((1, 2, 3, 4)) and not PrefixCache(max_tokens=0).fits((1,))
    cache.put((1, 2, 3, 4), ["kv"])
    assert cache.stats()["entries"] == 0


def test_a_prompt_cache_holds_the_prefix_as_views_and_appends_each_layers_prompt() -> None:
    prefix = [(torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)) for _ in range(3)]
    cache = prompt_cache(prefix, rows=4)
    assert cache.get_seq_length() == 5
    assert cache.layers[1].keys.data_ptr() == prefix[1][0].data_ptr()  # not copied
    new_keys, new_values = torch.randn(4, 2, 3, 4), torch.randn(4, 2, 3, 4)
    keys, values = cache.update(new_keys, new_values, 1)
    assert keys.shape == (4, 2, 8, 4)
    torch.testing.assert_close(keys[:, :, :5], prefix[1][0].expand(4, -1, -1, -1))
    torch.testing.assert_close(values[:, :, 5:], new_values)
    assert cache.get_seq_length(1) == 8 and cache.get_seq_length(2) == 5
