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
    FINISHED = "finished"  # slot freed; its last sampled tokens may still be on their way


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
    prefix: tuple[int, ...] = ()  # the prompt's start shared with others (prefix cache key)
    num_scheduled: int = 0  # tokens sampled on the device, read back or not
    ended: bool = False  # the Finished event (or an error) has been emitted

    @property
    def output_ids(self) -> list[int]:
        """Generated tokens read back so far; the splitter keeps the one list."""
        return self.splitter.token_ids

    @property
    def position(self) -> int:
        """Position of the next token to feed: prompt plus sampled tokens, minus one."""
        return self.num_prompt_tokens + self.num_scheduled - 1
