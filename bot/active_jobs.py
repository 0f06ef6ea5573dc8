"""The answers being produced, per user, so that /forget can stop them at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class ActiveJobs:
    def __init__(self) -> None:
        self._tasks: dict[int, set[asyncio.Task]] = {}

    @contextmanager
    def track(self, user_id: int, task: asyncio.Task) -> Iterator[None]:
        """`task` answers for `user_id` while the block runs."""
        tasks = self._tasks.setdefault(user_id, set())
        tasks.add(task)
        try:
            yield
        finally:
            tasks.discard(task)
            if not tasks:
                del self._tasks[user_id]

    def cancel(self, user_id: int) -> set[asyncio.Task]:
        """Cancel every answer being produced for `user_id`; return their tasks."""
        tasks = set(self._tasks.get(user_id, ()))
        for task in tasks:
            task.cancel()
        return tasks

    def __len__(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())
