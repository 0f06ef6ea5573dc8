"""The album_parts table: an album's photos (Telegram: one message each, same
media_group_id) while they arrive, then closed into one job and kept (without file ids or
captions) so that a part delivered again is not taken twice."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple

from bot.storage.jobs import JobStore, TooManyJobs
from bot.storage.records import PART_COLS, AlbumPart, Job, utc_now


class _AlbumGone(Exception):
    """An album's parts were erased or closed meanwhile."""


class AlbumStore(JobStore):
    async def add_album_part(self, part: AlbumPart) -> bool:
        """Record one arrived part of an album; False when Telegram delivered it before
        (whether its album is still open or closed) or /forget erased it."""
        async with self._transaction():
            if await self._is_erased(part.chat_id, part.message_id):
                return False
            row = await self._one(
                f"INSERT INTO album_parts ({PART_COLS}, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (chat_id, message_id) DO NOTHING RETURNING 1",
                (*astuple(part), utc_now()),
            )
        return row is not None

    async def get_open_album(self, chat_id: int, media_group_id: str) -> list[AlbumPart]:
        """The parts of an album not yet closed into a job, in the order they were sent."""
        rows = await self._all(
            f"SELECT {PART_COLS} FROM album_parts WHERE chat_id = ? AND media_group_id = ?"
            " AND job_id IS NULL ORDER BY message_id",
            (chat_id, media_group_id),
        )
        return [AlbumPart(*row) for row in rows]

    async def get_open_albums(self) -> list[tuple[int, str]]:
        """(chat_id, media_group_id) of every album still collecting (after a restart)."""
        rows = await self._all(
            "SELECT DISTINCT chat_id, media_group_id FROM album_parts WHERE job_id IS NULL"
        )
        return [(chat_id, group) for chat_id, group in rows]

    async def close_album(
        self,
        parts: Sequence[AlbumPart],
        *,
        question: str | None,
        file_ids: Sequence[str],
        max_unfinished: int | None = None,
        language: str = "en",
    ) -> Job | None:
        """One job for the album's `parts` (keyed by its first part's message), asking
        about `file_ids`; the parts are marked with it and their file ids and captions
        dropped. None, and nothing changed, when any part is gone (/forget) or already
        closed. Raises TooManyJobs as add_job does; the parts are closed then too (the
        user is told once)."""
        first = parts[0]
        try:
            async with self._transaction():
                await self._close_parts(parts, job_id=0)
                try:
                    job = await self._insert_job(
                        chat_id=first.chat_id,
                        message_id=first.message_id,
                        user_id=first.user_id,
                        chat_type=first.chat_type,
                        question=question,
                        file_ids=file_ids,
                        max_unfinished=max_unfinished,
                        language=language,
                    )
                except TooManyJobs as exc:
                    refused = exc  # the parts stay closed: the album is refused once
                else:
                    refused = None
                    if job is not None:
                        await self._db.execute(
                            "UPDATE album_parts SET job_id = ? WHERE chat_id = ?"
                            f" AND message_id IN ({', '.join('?' * len(parts))})",
                            (job.id, first.chat_id, *(part.message_id for part in parts)),
                        )
        except _AlbumGone:
            return None
        if refused is not None:
            raise refused
        return job

    async def _close_parts(self, parts: Sequence[AlbumPart], *, job_id: int) -> None:
        """Mark the open `parts` with `job_id` (0: closed, no job yet) and drop their file
        ids and captions; raises _AlbumGone (the transaction rolls back) unless all of
        them were open."""
        cursor = await self._db.execute(
            "UPDATE album_parts SET job_id = ?, file_id = NULL, caption = NULL"
            f" WHERE chat_id = ? AND message_id IN ({', '.join('?' * len(parts))})"
            " AND job_id IS NULL",
            (job_id, parts[0].chat_id, *(part.message_id for part in parts)),
        )
        if cursor.rowcount != len(parts):
            raise _AlbumGone
