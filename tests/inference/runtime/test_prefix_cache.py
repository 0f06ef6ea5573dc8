"""The prefix cache's bookkeeping: least recently used entries go first, within a budget."""

from __future__ import annotations

from inference.runtime.prefix_cache import PrefixCache


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
