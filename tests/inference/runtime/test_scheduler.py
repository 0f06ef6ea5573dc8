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
    waiting(scheduler, 4)
    assert prefill_sizes(scheduler) == [4]
    waiting(scheduler, 8)
    assert prefill_sizes(scheduler) == [8]  # more than 4 wait: up to 8 at once
    waiting(scheduler, 21)
    assert prefill_sizes(scheduler) == [8, 8, 5]  # 21 → 13 → 5 (still more than 4)
    waiting(scheduler, 3)
    assert prefill_sizes(scheduler) == [3]
    assert len(scheduler.running) == 36


def test_a_deep_queues_prefill_runs_without_a_decode_step_beside_it() -> None:
    scheduler = Scheduler(max_slots=64, max_seq_len=4096, max_prefill_tokens=8192,
                          max_prefill_seqs=4, deep_queue_prefill_seqs=8)  # fmt: skip
    waiting(scheduler, 3)
    assert scheduler.schedule().decode == []  # nothing was running
    waiting(scheduler, 12)
    plan = scheduler.schedule()
    assert len(plan.prefill) == 8 and plan.decode == []  # a burst: prefills back to back
    plan = scheduler.schedule()
    assert len(plan.prefill) == 4 and plan.decode == scheduler.running[:11]
    plan = scheduler.schedule()
    assert plan.prefill == [] and plan.decode == scheduler.running


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


def test_the_token_budget_counts_the_tokens_a_prefill_computes_not_a_cached_prefix() -> None:
    def make(cached: bool) -> Scheduler:
        scheduler = Scheduler(
            max_slots=64,
            max_seq_len=4096,
            max_prefill_tokens=4000,
            max_prefill_seqs=16,
            cached_tokens=lambda prefix: len(prefix) if cached else 0,
        )
        for _ in range(16):
            seq = Sequence(Request(language="en", question="?"), None, None, None)
            seq.num_prompt_tokens, seq.prefix = 900, tuple(range(500))
            scheduler.add(seq)
        return scheduler

    assert prefill_sizes(make(cached=False)) == [4, 4, 4, 4]  # 900 tokens each
    assert prefill_sizes(make(cached=True)) == [10, 6]  # 400 each after the cached 500
