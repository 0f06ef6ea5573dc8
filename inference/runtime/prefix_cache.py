"""Keys and values of prompt prefixes that many requests share (the system prompt), kept
on the device so that a prefill computes only what follows them.

The key is the prefix's token ids: a causal model's KV for those positions depends on
nothing else, so a hit is exact whatever text produced the tokens.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# per layer: (keys, values), each [1, kv heads, prefix length, head dim]
PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]


class PrefixCache:
    """Least recently used prefixes, within a budget of `max_tokens` positions in all."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, ...], PrefixKV] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def num_tokens(self) -> int:
        return sum(len(prefix) for prefix in self._entries)

    def fits(self, prefix: tuple[int, ...]) -> bool:
        return 0 < len(prefix) <= self.max_tokens

    def get(self, prefix: tuple[int, ...]) -> PrefixKV | None:
        entry = self._entries.get(prefix)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(prefix)
        return entry

    def put(self, prefix: tuple[int, ...], entry: PrefixKV) -> None:
        if not self.fits(prefix):
            return
        self._entries.pop(prefix, None)
        while self._entries and self.num_tokens + len(prefix) > self.max_tokens:
            self._entries.popitem(last=False)
        self._entries[prefix] = entry

    def clear(self) -> None:
        self._entries.clear()

    def stats(self) -> dict:
        return {
            "entries": len(self._entries),
            "tokens": self.num_tokens,
            "hits": self.hits,
            "misses": self.misses,
        }


def prompt_cache(prefix_kv: PrefixKV, rows: int, apart: bool = False) -> DynamicCache:
    """A prefill's cache holding a shared prefix's K/V for `rows` prompts as broadcast views:
    each layer's update joins them to its prompts' K/V in one copy (DynamicCache.update
    would copy them first: 60 copies before an 8-photo prefill's first kernel). `apart`:
    no join; each layer keeps and returns its prompts' own K/V only (for attention that
    reads the prefix's where it is: kernels.prompt_attention)."""
    cache = DynamicCache()
    for keys, values in prefix_kv:
        if apart:
            layer = AfterPrefixLayer(keys, values)
        else:
            layer = DynamicLayer()
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = (t.expand(rows, -1, -1, -1) for t in (keys, values))
        cache.layers.append(layer)
    return cache


class AfterPrefixLayer(DynamicLayer):
    """A prefill's layer of prompts after a shared prefix, their K/V kept apart from its."""

    def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor) -> None:
        super().__init__()
        self.prefix = (prefix_keys, prefix_values)
        self.lazy_initialization(prefix_keys, prefix_values)
        self.keys, self.values = prefix_keys[:, :, :0], prefix_values[:, :, :0]  # none yet

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys, self.values = key_states, value_states
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.prefix[0].shape[-2] + self.keys.shape[-2]
