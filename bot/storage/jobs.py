"""The jobs table: a user's photo or question from acceptance until its answer is delivered
(pending → answered → delivered, or failed), so that a restart loses none; and the bot's
answer messages about a photo in a group (answer_messages), gone with their job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.storage.erasure import ErasureStore
from bot.storage.history import RECENT_TURNS, HistoryStore
from bot.storage.records import (
    JOB_COLS,
    NO_REPLY,
    Job,
    Reply,
    StoredMessage,
    file_id_columns,
    job_from_row,
    utc_now,
)
from bot.storage.users import UserStore

UNFINISHED = ("pending", "answered")


@dataclass(frozen=True)
class AnsweredPhoto:
    file_id: str
    asker: int  # whom the answer was for
    sender: int  # whose photo it is


class TooManyJobs(Exception):
    """The user already waits for as many answers as allowed."""


class JobStore(UserStore, HistoryStore, ErasureStore):
    async def add_job(
        self,
        *,
        chat_id: int,
        message_id: int,
        user_id: int,
        chat_type: str,
        question: str | None,
        image_file_id: str | None,
        max_unfinished: int | None = None,
        language: str = "en",
        reply: Reply = NO_REPLY,
    ) -> Job | None:
        """Record an accepted request (with what it replies to in a group, `reply`);
        None if that message already has a job, or had one that /forget erased
        (redelivery). An album's job: close_album.
        Raises TooManyJobs when the user already has `max_unfinished` unanswered jobs.
        A user seen for the first time is stored with `language`, for recovery too."""
        async with self._transaction():
            if await self._is_erased(chat_id, message_id):
                return None
            return await self._insert_job(
                chat_id=chat_id,
                message_id=message_id,
                user_id=user_id,
                chat_type=chat_type,
                question=question,
                file_ids=(image_file_id,) if image_file_id else (),
                max_unfinished=max_unfinished,
                language=language,
                reply=reply,
            )

    async def _insert_job(
        self,
        *,
        chat_id: int,
        message_id: int,
        user_id: int,
        chat_type: str,
        question: str | None,
        file_ids: Sequence[str],
        max_unfinished: int | None,
        language: str,
        reply: Reply = NO_REPLY,
    ) -> Job | None:
        now = utc_now()
        await self._add_user_if_missing(user_id, language, now)
        await self._check_room(user_id, max_unfinished)
        row = await self._one(
            "INSERT INTO jobs (chat_id, message_id, user_id, chat_type, question,"
            " image_file_id, image_file_ids, quoted, quoted_from, photo_from, status, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
            f" ON CONFLICT (chat_id, message_id) DO NOTHING RETURNING {JOB_COLS}",
            (chat_id, message_id, user_id, chat_type, question, *file_id_columns(file_ids),
             reply.quoted, reply.quoted_from, reply.photo_from, now, now),
        )  # fmt: skip
        return job_from_row(row) if row else None

    async def _check_room(self, user_id: int, max_unfinished: int | None) -> None:
        """Raise TooManyJobs when the user waits for `max_unfinished` answers (held photos
        do not count); within a transaction."""
        if max_unfinished is None:
            return
        (count,) = await self._one(
            f"SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN {UNFINISHED} AND NOT held",
            (user_id,),
        )
        if count >= max_unfinished:
            raise TooManyJobs(count)

    async def set_job_file_ids(self, job_id: int, file_ids: Sequence[str]) -> None:
        """The photos a job asks about, when fewer than it was accepted with (an album's
        unreadable pages left out: its history keeps only pages a follow-up can see)."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET image_file_id = ?, image_file_ids = ?, updated_at = ?"
                " WHERE id = ?",
                (*file_id_columns(file_ids), utc_now(), job_id),
            )

    async def hold_job(self, job_id: int, *, max_held: int | None = None) -> None:
        """Keep a pending job back until its user asks for it (release_job); of the user's
        held jobs beyond the newest `max_held`, the older fail (their texts dropped)."""
        async with self._transaction():
            row = await self._one(
                "UPDATE jobs SET held = 1, updated_at = ? WHERE id = ? AND status = 'pending'"
                " RETURNING user_id",
                (utc_now(), job_id),
            )
            if row is None or max_held is None:
                return
            await self._db.execute(
                "UPDATE jobs SET status = 'failed', question = NULL, quoted = NULL,"
                " quoted_from = NULL, updated_at = ?"
                " WHERE id IN (SELECT id FROM jobs WHERE user_id = ? AND held"
                " AND status = 'pending' ORDER BY id DESC LIMIT -1 OFFSET ?)",
                (utc_now(), row[0], max_held),
            )

    async def release_job(
        self, job_id: int, user_id: int, *, max_unfinished: int | None = None
    ) -> Job | None:
        """Let `user_id`'s held job run, once; None when it is not theirs, not held (asked
        already) or gone (/forget, retention). Raises TooManyJobs when they already wait
        for `max_unfinished` answers."""
        async with self._transaction():
            row = await self._one(
                f"SELECT {JOB_COLS} FROM jobs WHERE id = ? AND user_id = ? AND held"
                " AND status = 'pending'",
                (job_id, user_id),
            )
            if row is None:
                return None
            await self._check_room(user_id, max_unfinished)
            await self._db.execute(
                "UPDATE jobs SET held = 0, updated_at = ? WHERE id = ?", (utc_now(), job_id)
            )
        return job_from_row(row)

    async def mark_history_photo(self, job: Job, *, max_turns: int) -> int | None:
        """For a follow-up (a job without photos): record on the job whose photo it sees
        again (the newest of its user's last `max_turns` turns in the chat: load_history)
        when another member's, so that their /forget stops it too; return them. In one
        statement: a /forget of theirs comes wholly before or wholly after it."""
        async with self._transaction():
            row = await self._one(
                f"UPDATE jobs SET photo_from = (SELECT photo_from FROM messages WHERE"
                f" {RECENT_TURNS} AND image_file_id IS NOT NULL ORDER BY id DESC LIMIT 1)"
                " WHERE id = ? AND status = 'pending' RETURNING photo_from",
                (job.chat_id, job.user_id, job.chat_id, job.user_id, max_turns, job.id),
            )
        return row[0] if row else None

    async def start_job_attempt(self, job_id: int) -> int | None:
        """Count one more run of the job; return the number of runs so far, or None when
        it may no longer run: gone (its user said /forget) or failed meanwhile (the group
        member whose photo it asks about did)."""
        async with self._transaction():
            row = await self._one(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE id = ?"
                " AND status = 'pending' RETURNING attempts",
                (utc_now(), job_id),
            )
        return None if row is None else int(row[0])

    async def set_job_placeholder(self, job_id: int, message_id: int) -> None:
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET placeholder_id = ?, updated_at = ? WHERE id = ?",
                (message_id, utc_now(), job_id),
            )

    async def complete_job(self, job: Job, *, answer: str, thought: str) -> StoredMessage | None:
        """Store the answer and both sides of the turn in the history, atomically; return the
        answer's history row. None, and nothing stored, when the job is no longer pending
        (erased by /forget, its user's or the photo's sender's). The quoted text is dropped:
        the answer no longer needs it."""
        async with self._transaction():
            row = await self._one(
                "UPDATE jobs SET status = 'answered', answer = ?, thought = ?, quoted = NULL,"
                " quoted_from = NULL,"
                " updated_at = ? WHERE id = ? AND status = 'pending' RETURNING photo_from",
                (answer, thought, utc_now(), job.id),
            )
            if row is None:
                return None
            question, images = job.question or "", job.image_file_ids
            photo_from = row[0] if images else None  # a follow-up's: the history row has it
            await self._insert_message(
                job.chat_id, job.user_id, "user", question, images, photo_from=photo_from
            )
            stored = await self._insert_message(job.chat_id, job.user_id, "model", answer, ())
            await self._db.execute(
                "UPDATE jobs SET answer_history_id = ? WHERE id = ?", (stored.id, job.id)
            )
        return stored

    async def set_job_parts_sent(
        self, job_id: int, parts_sent: int, *, done: bool, answer_message_id: int | None = None
    ) -> None:
        """Telegram accepted `parts_sent` messages of the answer, the last one as
        `answer_message_id` when given (kept: get_answered_photo); when `done`, the job is
        delivered and its copy of the answer dropped (the history keeps it)."""
        async with self._transaction():
            if answer_message_id is not None:
                await self._db.execute(
                    "INSERT OR IGNORE INTO answer_messages SELECT chat_id, ?, id FROM jobs"
                    " WHERE id = ?",
                    (answer_message_id, job_id),
                )
            if not done:
                await self._db.execute(
                    "UPDATE jobs SET parts_sent = ?, updated_at = ? WHERE id = ?",
                    (parts_sent, utc_now(), job_id),
                )
                return
            await self._finish_job_locked(job_id, "delivered", parts_sent=parts_sent)

    async def link_answer_message(self, answer: StoredMessage, message_id: int) -> None:
        """The bot's message `message_id` in the answer's chat (the translation drawn on the
        photo) leads to the answer's photo, like the answer: get_answered_photo."""
        async with self._transaction():
            await self._db.execute(
                "INSERT OR IGNORE INTO answer_messages SELECT chat_id, ?, id FROM jobs"
                " WHERE answer_history_id = ? AND chat_id = ?",
                (message_id, answer.id, answer.chat_id),
            )

    async def get_answered_photo(self, chat_id: int, message_id: int) -> AnsweredPhoto | None:
        """The photo that the bot's message `message_id` in `chat_id` answers, if it is one
        of its answers about a photo in a group (gone once its sender said /forget)."""
        row = await self._one(
            "SELECT j.image_file_id, j.user_id, COALESCE(j.photo_from, j.user_id)"
            " FROM answer_messages AS a JOIN jobs AS j ON j.id = a.job_id"
            " WHERE a.chat_id = ? AND a.message_id = ?",
            (chat_id, message_id),
        )
        return AnsweredPhoto(*row) if row and row[0] else None

    async def set_job_status(self, job_id: int, status: str) -> None:
        """'delivered' or 'failed'; the answer text is dropped (the history keeps it), and
        the quoted text."""
        await self._finish_job(job_id, status)

    async def _finish_job(self, job_id: int, status: str, *, parts_sent: int | None = None) -> None:
        async with self._transaction():
            await self._finish_job_locked(job_id, status, parts_sent=parts_sent)

    async def _finish_job_locked(
        self, job_id: int, status: str, *, parts_sent: int | None = None
    ) -> None:
        # a follow-up's photo_from was only for while it ran (a photo's stays: the answer's
        # link to its photo, get_answered_photo)
        await self._db.execute(
            "UPDATE jobs SET status = ?, answer = NULL, thought = NULL, quoted = NULL,"
            " quoted_from = NULL, photo_from = IIF(image_file_id IS NULL, NULL, photo_from),"
            " parts_sent = COALESCE(?, parts_sent), updated_at = ? WHERE id = ?",
            (status, parts_sent, utc_now(), job_id),
        )

    async def get_unfinished_jobs(self) -> list[Job]:
        rows = await self._all(
            f"SELECT {JOB_COLS} FROM jobs WHERE status IN {UNFINISHED} AND NOT held ORDER BY id"
        )
        return [job_from_row(row) for row in rows]

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._one(f"SELECT {JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    async def count_jobs_by_status(self) -> dict[str, int]:
        rows = await self._all("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {status: int(count) for status, count in rows}

    async def check_readable(self) -> None:
        """A read of the jobs table (for /readyz, which must not write). Raises if the
        database cannot be read."""
        await self._one("SELECT COUNT(*) FROM jobs WHERE status = 'pending'")
