"""The answers being produced, per user whose data they use, so that /forget stops them at
once: the asker's, and the group member's whose photo they ask about."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class ActiveJobs:
    def __init__(self) -> None:
        self._tasks: dict[int, set[asyncio.Task]] = {}
        self._erased_by: dict[asyncio.Task, int] = {}

    @contextmanager
    def track(self, user_ids: Iterable[int], task: asyncio.Task) -> Iterator[None]:
        """`task` works with data of each of `user_ids` while the block runs."""
        users = tuple(dict.fromkeys(user_ids))
        for user_id in users:
            self._tasks.setdefault(user_id, set()).add(task)
        try:
            yield
        finally:
            self._erased_by.pop(task, None)
            for user_id in users:
                tasks = self._tasks[user_id]
                tasks.discard(task)
                if not tasks:
                    del self._tasks[user_id]

    def cancel(self, user_id: int) -> set[asyncio.Task]:
        """Cancel every answer being produced with `user_id`'s data; return their tasks."""
        tasks = set(self._tasks.get(user_id, ()))
        for task in tasks:
            self._erased_by.setdefault(task, user_id)
            task.cancel()
        return tasks

    def erased_by(self, task: asyncio.Task) -> int | None:
        """Whose /forget cancelled `task` (within its `track` block)."""
        return self._erased_by.get(task)

    def __len__(self) -> int:
        return len({task for tasks in self._tasks.values() for task in tasks})
