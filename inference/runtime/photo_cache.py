"""The vision tower's output per photo, kept on the device, so that a photo seen again is not
run through the tower again: a conversation's follow-up carries its earlier photo with
every later question (the bot puts the last turns, photos too, into each prompt).

The key is a hash of the photo's bytes (images.photo_key; normalized when they arrive, so
one photo gives one key), taken when a request is prepared. The tower's output depends on
nothing else (the engine's soft-token budget is fixed), so a hit is exact. Only soft
tokens are kept, never the photo, in GPU memory only: they leave in least-recently-used
order within the budget, and MAX_IDLE_S after their last use in any case (a follow-up
comes within minutes; a traveller's photos do not linger after they /forget them).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import torch

MAX_IDLE_S = 30 * 60


class PhotoCache:
    """Least recently used photos' soft tokens ([tokens, hidden] each) within `max_bytes`."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        # key → (soft tokens, last use), least recently used first
        self._entries: OrderedDict[bytes, tuple[torch.Tensor, float]] = OrderedDict()
        self.num_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes | None) -> torch.Tensor | None:
        now = self._expire()
        entry = self._entries.pop(key, None) if key is not None else None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries[key] = (entry[0], now)
        return entry[0]

    def put(self, key: bytes | None, features: torch.Tensor) -> None:
        """Keep a copy of `features` (a view would keep its whole batch alive)."""
        now = self._expire()
        size = features.numel() * features.element_size()
        if key is None or size > self.max_bytes:
            return
        self._drop(key)
        while self._entries and self.num_bytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (features.clone(), now)
        self.num_bytes += size

    def _expire(self) -> float:
        now = self.clock()
        while self._entries and next(iter(self._entries.values()))[1] < now - MAX_IDLE_S:
            self._drop(next(iter(self._entries)))
        return now

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.num_bytes -= entry[0].numel() * entry[0].element_size()

    def clear(self) -> None:
        self._entries.clear()
        self.num_bytes = 0

    def stats(self) -> dict:
        return {"photos": len(self._entries), "bytes": self.num_bytes, "hits": self.hits,
                "misses": self.misses}  # fmt: skip
