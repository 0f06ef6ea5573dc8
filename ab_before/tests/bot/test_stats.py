"""The wait estimate shown to queued and refused travellers."""

from __future__ import annotations

from bot.stats import Stats


def test_no_estimate_before_anything_was_answered() -> None:
    assert Stats().wait_estimate_s(3, batch_size=8) is None


def test_estimate_is_one_typical_answer_per_full_batch_ahead() -> None:
    stats = Stats()
    for latency in (4.0, 12.0, 13.0, 14.0, 90.0):
        stats.record_answer(latency_s=latency, first_token_s=1.0)
    assert stats.wait_estimate_s(1, batch_size=8) == 20  # median 13 s, rounded up to 10 s
    assert stats.wait_estimate_s(8, batch_size=8) == 20
    assert stats.wait_estimate_s(9, batch_size=8) == 30  # 2 x 13 s
    assert stats.wait_estimate_s(17, batch_size=8) == 40  # 3 x 13 s
    stats.latencies_s.clear()
    stats.record_answer(latency_s=0.2, first_token_s=None)
    assert stats.wait_estimate_s(1, batch_size=8) == 10  # never less than 10 s
