"""Service figures for admins: latency percentiles of recent answers and counters."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Stats:
    started_at: float = field(default_factory=time.monotonic)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    first_token_s: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    num_answered: int = 0
    num_failed: int = 0

    def record_answer(self, *, latency_s: float, first_token_s: float | None) -> None:
        self.num_answered += 1
        self.latencies_s.append(latency_s)
        if first_token_s is not None:
            self.first_token_s.append(first_token_s)

    def record_failure(self) -> None:
        self.num_failed += 1

    def wait_estimate_s(self, position: int, batch_size: int) -> int | None:
        """Rough wait for place `position` in line: one typical answer per full batch ahead,
        rounded up to 10 s; None before anything was answered."""
        typical = percentile(self.latencies_s, 0.5)
        if typical is None:
            return None
        batches = -(-max(position, 1) // max(batch_size, 1))
        return max(10, -(-int(typical * batches) // 10) * 10)


def percentile(values, q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
