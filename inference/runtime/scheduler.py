"""Which sequences prefill and which decode in the next step; slot bookkeeping.

Running sequences always occupy slots 0..num_running-1 (compact), so a decode
step works on the first rows of the KV cache without gathering. When a sequence
in the middle leaves, the last one moves into its slot (`moves` tells the cache).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.runtime.sequence import Sequence, Status

# prompt tokens one prefill computes at most (a cached prefix's not counted): bounds its
# activations' memory (16 photo prompts after the system prompt fit; docs/performance.md)
MAX_PREFILL_TOKENS = 8192


@dataclass
class Plan:
    prefill: list[Sequence] = field(default_factory=list)
    # the running sequences that decode in this step, before the prefill; none when the
    # prefill is a deep queue's (more prompts than max_prefill_seqs)
    decode: list[Sequence] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        *,
        max_slots: int,
        max_seq_len: int,
        max_prefill_seqs: int,
        max_prefill_tokens: int = MAX_PREFILL_TOKENS,
        deep_queue_prefill_seqs: int | None = None,
        cached_tokens: Callable[[tuple[int, ...]], int] | None = None,
    ) -> None:
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.max_prefill_tokens = max_prefill_tokens
        self.max_prefill_seqs = max_prefill_seqs
        # more waiting than max_prefill_seqs: prefill up to this many at once (a deep queue
        # waits anyway, and bigger prefills serve it sooner); None: always max_prefill_seqs
        self.deep_queue_prefill_seqs = deep_queue_prefill_seqs or max_prefill_seqs
        # of a prompt's shared prefix, the tokens a prefill takes from the prefix cache
        # (not computed, so not in the token budget); None: none
        self.cached_tokens = cached_tokens or (lambda prefix: 0)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # index == slot

    @property
    def num_active(self) -> int:
        return len(self.waiting) + len(self.running)

    def add(self, seq: Sequence) -> None:
        if seq.num_prompt_tokens >= self.max_seq_len:
            raise ValueError(f"prompt of {seq.num_prompt_tokens} tokens exceeds {self.max_seq_len}")
        self.waiting.append(seq)

    def schedule(self) -> Plan:
        """Admit waiting sequences into free slots (within the prefill budget); decode the rest.
        One prefill's prompts share their prefix (all of them its KV from the cache).
        A deep queue's prefill runs without a decode step beside it (see `Plan.decode`)."""
        plan = Plan(decode=list(self.running))
        budget = self.max_prefill_tokens
        limit = self.max_prefill_seqs
        if len(self.waiting) > self.max_prefill_seqs:
            limit = self.deep_queue_prefill_seqs
        while (
            self.waiting
            and len(self.running) < self.max_slots
            and len(plan.prefill) < limit
            and (
                not plan.prefill
                or (
                    self.computed_tokens(self.waiting[0]) <= budget
                    and self.waiting[0].prefix == plan.prefill[0].prefix
                )
            )
        ):
            seq = self.waiting.popleft()
            budget -= self.computed_tokens(seq)
            seq.slot = len(self.running)
            seq.status = Status.RUNNING
            self.running.append(seq)
            plan.prefill.append(seq)
        if len(plan.prefill) > self.max_prefill_seqs:
            # a burst: its last prefill's prompts decode all their tokens after it, so a
            # step before it only lengthens the burst; the running ones wait one prefill
            plan.decode = []
        return plan

    def computed_tokens(self, seq: Sequence) -> int:
        """The prompt tokens a prefill computes for `seq` (its cached prefix's are not)."""
        return seq.num_prompt_tokens - self.cached_tokens(seq.prefix)

    def finish(self, seq: Sequence, reason: str) -> list[tuple[int, int]]:
        """Free the sequence's slot; return (from_slot, to_slot) moves to apply to the cache."""
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        if seq in self.waiting:
            self.waiting.remove(seq)
            return []
        slot = seq.slot
        last = self.running.pop()
        seq.slot = -1
        if last is seq:
            return []
        self.running[slot] = last
        moved_from, last.slot = last.slot, slot
        return [(moved_from, slot)]
