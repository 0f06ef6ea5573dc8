"""The scheduler's admission: prompts per prefill by queue depth, slots and token budget."""

from __future__ import annotations

from inference import Request
from inference.runtime.scheduler import Scheduler
from inference.runtime.sequence import Sequence


def waiting(scheduler: Scheduler, count: int, tokens: int = 900) -> None:
    for _ in range(count):
        seq = Sequence(Request(language="en", question="?"), None, None, None)
        seq.num_prompt_tokens = tokens
        scheduler.add(seq)


def prefill_sizes(scheduler: Scheduler) -> list[int]:
    sizes = []
    while scheduler.waiting:
        sizes.append(len(scheduler.schedule().prefill))
    return sizes


def test_a_short_queue_prefills_few_at_a_time_and_a_deep_one_more() -> None:
    scheduler = Scheduler(max_slots=64, max_seq_len=4096, max_prefill_tokens=8192,
                          max_prefill_seqs=4, deep_queue_prefill_seqs=8)  # fmt: skip
    waiting(scheduler, 8)
    assert prefill_sizes(scheduler) == [4, 4]
    waiting(scheduler, 21)
    assert prefill_sizes(scheduler) == [8, 8, 4, 1]  # 21 → 13 → 5 (≤ 8: back to 4) → 1
    assert len(scheduler.running) == 29


def test_slots_and_the_token_budget_bound_a_prefill() -> None:
    scheduler = Scheduler(max_slots=10, max_seq_len=4096, max_prefill_tokens=4000,
                          max_prefill_seqs=4, deep_queue_prefill_seqs=8)  # fmt: skip
    waiting(scheduler, 30, tokens=900)
    assert [len(scheduler.schedule().prefill) for _ in range(4)] == [4, 4, 2, 0]
    assert len(scheduler.running) == 10 and len(scheduler.waiting) == 20


def test_one_prefill_holds_prompts_of_one_shared_prefix_in_arrival_order() -> None:
    scheduler = Scheduler(max_slots=64, max_seq_len=4096, max_prefill_tokens=8192,
                          max_prefill_seqs=4, deep_queue_prefill_seqs=8)  # fmt: skip
    for prefix in [(1, 2), (1, 2), (3,), (3,), (1, 2), ()]:
        seq = Sequence(Request(language="en", question="?"), None, None, None)
        seq.num_prompt_tokens, seq.prefix = 900, prefix
        scheduler.add(seq)
    groups = []
    while scheduler.waiting:
        groups.append([seq.prefix for seq in scheduler.schedule().prefill])
    assert groups == [[(1, 2), (1, 2)], [(3,), (3,)], [(1, 2)], [()]]
