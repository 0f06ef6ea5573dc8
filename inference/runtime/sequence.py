"""One request's state inside the batching engine."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from inference.output import OutputSplitter
from inference.types import Event, Request


class Status(enum.Enum):
    WAITING = "waiting"  # accepted, not prefilled yet
    RUNNING = "running"  # has a KV slot, decodes every step
    FINISHED = "finished"


@dataclass
class Sequence:
    request: Request
    emit: Callable[[Event], None]
    is_cancelled: Callable[[], bool]
    splitter: OutputSplitter
    num_prompt_tokens: int = 0
    status: Status = Status.WAITING
    slot: int = -1
    finish_reason: str | None = None
    max_new_tokens: int = 0
    inputs: dict | None = None  # prepared model inputs until prefilled

    @property
    def output_ids(self) -> list[int]:
        """Generated tokens; the splitter keeps the one list."""
        return self.splitter.token_ids

    @property
    def position(self) -> int:
        """Position of the next token to feed (prompt plus generated tokens so far, minus one)."""
        return self.num_prompt_tokens + len(self.output_ids) - 1

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + len(self.output_ids)

    @property
    def last_token(self) -> int:
        return self.output_ids[-1]
