"""The per-user token bucket that drops a flood of updates."""

from __future__ import annotations

import time

from bot.update_budget import UpdateBudget


def test_a_burst_then_the_rate_per_user() -> None:
    budget = UpdateBudget(burst=3, per_second=20.0)
    assert [budget.take(1) for _ in range(4)] == [True, True, True, False]
    assert budget.take(2)  # another user has their own bucket
    time.sleep(0.06)  # a bit more than one update's worth at 20 a second
    assert budget.take(1) and not budget.take(1)


def test_a_refused_user_is_told_once_a_minute(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    budget = UpdateBudget(burst=1, per_second=1.0)
    assert budget.take(1) and not budget.take(1)
    assert [budget.tell(1), budget.tell(1), budget.tell(2)] == [True, False, True]
    now[0] += 59.0
    assert not budget.tell(1)
    now[0] += 1.0
    assert budget.tell(1)
