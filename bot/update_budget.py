"""Flood control per user: each update a user sends may cost the bot a message, and all the
bot's messages share Telegram's 30 a second, so one user pressing a button a thousand times
(or sending /diet as often) would hold up everyone. A token bucket per user: BURST updates
at once, then PER_SECOND; the rest are dropped before any work is done. 30 photos chosen at
once reach the bot as three albums of 10 (one update a page): the burst takes them whole.
The user is told once a minute at most that some of their messages were skipped."""

from __future__ import annotations

import time

BURST = 40
PER_SECOND = 1.0
MAX_TRACKED = 10_000  # users in the table before the ones with a full bucket are dropped
TELL_EVERY_S = 60.0  # "too fast" at most this often per user: a reply adds to the flood


class UpdateBudget:
    def __init__(self, *, burst: int = BURST, per_second: float = PER_SECOND) -> None:
        self.burst = burst
        self.per_second = per_second
        self._buckets: dict[int, tuple[float, float]] = {}  # user → (tokens, when counted)
        self._told: dict[int, float] = {}  # user → when last told they were too fast

    def take(self, user_id: int) -> bool:
        """Count one update of `user_id`; False when they have sent too many too fast."""
        now = time.monotonic()
        tokens = self._tokens(user_id, now)
        if tokens < 1:
            return False
        self._buckets[user_id] = (tokens - 1, now)
        if len(self._buckets) > MAX_TRACKED:
            self._drop_full(now)
        return True

    def tell(self, user_id: int) -> bool:
        """Whether to tell `user_id`, whose update was refused, that they are too fast:
        once in TELL_EVERY_S."""
        now = time.monotonic()
        if now - self._told.get(user_id, -TELL_EVERY_S) < TELL_EVERY_S:
            return False
        self._told[user_id] = now
        if len(self._told) > MAX_TRACKED:
            self._told = {u: t for u, t in self._told.items() if now - t < TELL_EVERY_S}
        return True

    def _tokens(self, user_id: int, now: float) -> float:
        tokens, counted = self._buckets.get(user_id, (self.burst, now))
        return min(self.burst, tokens + (now - counted) * self.per_second)

    def _drop_full(self, now: float) -> None:
        """Forget the users whose bucket has filled again: they are new users to it."""
        for user_id in [u for u in self._buckets if self._tokens(u, now) >= self.burst]:
            del self._buckets[user_id]
