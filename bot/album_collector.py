"""Albums while their parts arrive. Telegram sends each photo of an album as its own
message (one update each, the same media_group_id, 10 at most), all at once from the
sender's app, so they reach the bot within a moment of each other, in any order and, with
concurrent updates, in handlers running side by side. An album is closed into one request
`quiet_s` after its last part arrived, `max_wait_s` after its first at the latest, or at
once with its 10th part. The parts themselves are stored (bot.storage: album_parts) before
they count here, so a restart finds them and closes the album then.

Invariant: each open album has one timer task, the only one that closes it; /forget cancels
the timers of its user's albums still collecting (their parts are deleted by then).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger()

MAX_PARTS = 10  # Telegram's most photos in one album
ADDRESSED_KEPT_S = 60.0  # a group album's mention holds for its later pages this long
MAX_ADDRESSED = 10_000  # group albums remembered at once (oldest forgotten first)

AlbumKey = tuple[int, str]  # (chat_id, media_group_id)


@dataclass
class _Collecting:
    user_id: int
    first_at: float
    deadline: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.Task | None = None
    is_closing: bool = False


class AlbumCollector:
    def __init__(self, *, quiet_s: float, max_wait_s: float) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._open: dict[AlbumKey, _Collecting] = {}
        self._closing: set[asyncio.Task] = set()  # timers that now answer their album
        # group albums whose page mentioned the bot: (chat, group) → (sender, when)
        self._addressed: OrderedDict[AlbumKey, tuple[int, float]] = OrderedDict()

    def remember_addressed(self, chat_id: int, group: str, sender: int) -> None:
        """A page of this group album is meant for the bot: so are its sender's later pages."""
        self._addressed[(chat_id, group)] = (sender, time.monotonic())
        while len(self._addressed) > MAX_ADDRESSED:
            self._addressed.popitem(last=False)

    def is_addressed(self, chat_id: int, group: str, sender: int) -> bool:
        kept = self._addressed.get((chat_id, group))
        return (
            kept is not None and kept[0] == sender and time.monotonic() - kept[1] < ADDRESSED_KEPT_S
        )

    def part_arrived(
        self,
        key: AlbumKey,
        user_id: int,
        num_parts: int,
        close: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """A part of `key` is stored (`num_parts` of it so far): (re)start its quiet window.
        `close` answers the album; only the first caller's is kept."""
        now = time.monotonic()
        album = self._open.get(key)
        if album is None:
            album = self._open[key] = _Collecting(user_id, now, now)
            album.timer = asyncio.create_task(self._close_when_quiet(key, album, close))
        album.deadline = (
            now
            if num_parts >= MAX_PARTS
            else min(now + self.quiet_s, album.first_at + self.max_wait_s)
        )
        album.changed.set()

    async def _close_when_quiet(
        self, key: AlbumKey, album: _Collecting, close: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        while (wait := album.deadline - time.monotonic()) > 0:
            album.changed.clear()
            try:
                async with asyncio.timeout(wait):
                    await album.changed.wait()
            except TimeoutError:
                pass
        album.is_closing = True
        del self._open[key]
        task = asyncio.current_task()
        self._closing.add(task)
        try:
            await close()
        except Exception:
            log.exception("album_failed")
        finally:
            self._closing.discard(task)

    def forget(self, user_id: int) -> None:
        """/forget: stop collecting the user's albums (their stored parts are deleted)."""
        for key, album in list(self._open.items()):
            if album.user_id == user_id and not album.is_closing:
                del self._open[key]
                album.timer.cancel()

    async def stop(self) -> None:
        """Stop the timers of albums still collecting (their stored parts are closed at the
        next start), and let the albums being answered finish, as other answers do."""
        timers = [album.timer for album in self._open.values()]
        self._open.clear()
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, *self._closing, return_exceptions=True)

    @property
    def num_collecting(self) -> int:
        return len(self._open)
