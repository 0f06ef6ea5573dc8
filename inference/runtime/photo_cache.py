"""The vision tower's output per photo, kept on the device, so that a photo seen again is not
run through the tower again: a conversation's follow-up carries its earlier photo with
every later question (the bot puts the last turns, photos too, into each prompt).

The key is a hash of the photo's bytes and its soft-token budget (images.photo_key;
normalized when they arrive, so one photo gives one key a budget), taken when a request is
prepared. The tower's output depends on nothing else (the budget is the engine's, smaller
for a prompt of many photos), so a hit is exact. Only soft
tokens are kept, never the photo, in GPU memory only: they leave in least-recently-used
order within the budget, and MAX_IDLE_S after their last use in any case (a follow-up
comes within minutes).

Each entry records its owners: whose requests put it there or used it (Request.owner, and
Request.photo_owners: a group member whose photo another asked about), so
that `forget(owner)` drops a traveller's photos at once when they say /forget, also a photo
another traveller sent too (that one's next request runs the tower again).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

MAX_IDLE_S = 30 * 60


@dataclass
class _Entry:
    features: torch.Tensor
    last_use: float
    owners: set[str] = field(default_factory=set)  # "" (nobody in particular) never in it


class PhotoCache:
    """Least recently used photos' soft tokens ([tokens, hidden] each) within `max_bytes`."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()  # least recently used first
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
        entry.last_use = now
        self._entries[key] = entry
        return entry.features

    def put(self, key: bytes | None, features: torch.Tensor) -> None:
        """Keep a copy of `features` (a view would keep its whole batch alive)."""
        now = self._expire()
        size = features.numel() * features.element_size()
        if key is None or size > self.max_bytes:
            return
        self._drop(key)
        while self._entries and self.num_bytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = _Entry(features.clone(), now)
        self.num_bytes += size

    def own(self, key: bytes | None, owner: str) -> None:
        """Record that a request of `owner` carries the kept photo `key` ("": nobody's)."""
        entry = self._entries.get(key) if key is not None else None
        if entry is not None and owner:
            entry.owners.add(owner)

    def owners(self, key: bytes) -> frozenset[str]:
        entry = self._entries.get(key)
        return frozenset(entry.owners) if entry is not None else frozenset()

    def forget(self, owner: str) -> None:
        """Drop every photo a request of `owner` carried, whoever else's requests did too."""
        for key in [key for key, entry in self._entries.items() if owner in entry.owners]:
            self._drop(key)

    def _expire(self) -> float:
        now = self.clock()
        while self._entries and next(iter(self._entries.values())).last_use < now - MAX_IDLE_S:
            self._drop(next(iter(self._entries)))
        return now

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.num_bytes -= entry.features.numel() * entry.features.element_size()

    def clear(self) -> None:
        self._entries.clear()
        self.num_bytes = 0

    def stats(self) -> dict:
        return {"photos": len(self._entries), "bytes": self.num_bytes, "hits": self.hits,
                "misses": self.misses}  # fmt: skip
