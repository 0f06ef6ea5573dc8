"""What is kept about a user across every table: shown (/mydata), erased with no older copy
left in the database files (/forget), and aged out (retention)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.storage.albums import AlbumStore
from bot.storage.currencies import CurrencyStore
from bot.storage.diets import DietStore
from bot.storage.erasure import ERASED_MESSAGES_KEPT
from bot.storage.jobs import UNFINISHED
from bot.storage.records import (
    JOB_COLS,
    MESSAGE_COLS,
    UserData,
    job_from_row,
    message_from_row,
    utc_now,
)


class PrivacyStore(AlbumStore, DietStore, CurrencyStore):
    async def get_user_data(self, user_id: int) -> UserData:
        """Everything kept about the user, in every chat (for /mydata in private)."""
        rows = await self._all(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE user_id = ? ORDER BY id", (user_id,)
        )
        user = await self.get_user(user_id)
        diet, currency = await self.get_diet(user_id), await self.get_currency(user_id)
        overlay = await self.get_overlay(user_id)
        held = await self._all(
            f"SELECT {JOB_COLS} FROM jobs WHERE user_id = ? AND held AND status = 'pending'"
            " ORDER BY id",
            (user_id,),
        )
        (asked,) = await self._one(
            "SELECT COUNT(DISTINCT image_file_id) FROM (SELECT image_file_id FROM jobs"
            " WHERE photo_from = ? UNION ALL SELECT image_file_id FROM messages"
            " WHERE photo_from = ?)",
            (user_id, user_id),
        )
        messages = [message_from_row(r) for r in rows]
        held_jobs = [job_from_row(r) for r in held]
        return UserData(user, messages, diet, currency, overlay, held_jobs, asked)

    async def delete_user_data(self, user_id: int) -> int:
        """Delete the user row, their messages in every chat and their jobs atomically, and
        every older copy of them in the database files; return rows deleted. A job of theirs
        still running finds itself gone and stores nothing (complete_job)."""
        async with self._lock:
            count = 0
            async with self._transaction_locked():
                jobs = await self._all(
                    "SELECT chat_id, message_id FROM jobs WHERE user_id = ?", (user_id,)
                )
                erased = [self._erased_digest(chat, message) for chat, message in jobs]
                await self._db.executemany(
                    "INSERT OR REPLACE INTO erased_messages VALUES (?, ?)",
                    [
                        (digest, utc_now())
                        for digest in [*erased, self._erased_digest("user", user_id)]
                    ],
                )
                parts = await self._all(
                    "SELECT chat_id, message_id FROM album_parts WHERE user_id = ?", (user_id,)
                )
                erased += [self._erased_digest(chat, message) for chat, message in parts]
                await self._db.executemany(
                    "INSERT OR REPLACE INTO erased_messages VALUES (?, ?)",
                    [(digest, utc_now()) for digest in erased],
                )
                # their words quoted in another member's job (a reply to their photo)
                cursor = await self._db.execute(
                    "UPDATE jobs SET quoted = NULL, quoted_from = NULL WHERE quoted_from = ?",
                    (user_id,),
                )
                count += cursor.rowcount
                count += await self._drop_photo_from_others(user_id)
                for table in ("users", "messages", "jobs", "album_parts", "user_rates"):
                    cursor = await self._db.execute(
                        f"DELETE FROM {table} WHERE user_id = ?", (user_id,)
                    )
                    count += cursor.rowcount
            await self._erase_old_copies()
            return count

    async def _drop_photo_from_others(self, user_id: int) -> int:
        """Their photo in other members' jobs and history (a question about it in a group):
        the reference goes; a job not yet answered fails (its answer is stopped:
        Services.erase_user); the asker's words and the answers stay theirs."""
        jobs = await self._db.execute(
            "UPDATE jobs SET image_file_id = NULL, image_file_ids = NULL, photo_from = NULL,"
            f" status = CASE WHEN status IN {UNFINISHED} THEN 'failed' ELSE status END,"
            " answer = NULL, thought = NULL, quoted = NULL, quoted_from = NULL"
            " WHERE photo_from = ?",
            (user_id,),
        )
        messages = await self._db.execute(
            "UPDATE messages SET image_file_id = NULL, image_file_ids = NULL, photo_from = NULL"
            " WHERE photo_from = ?",
            (user_id,),
        )
        return jobs.rowcount + messages.rowcount

    async def delete_older_than(self, days: float) -> int:
        """Retention: drop history and finished jobs older than `days`; return rows deleted."""
        cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat()
        async with self._transaction():
            messages = await self._db.execute(
                "DELETE FROM messages WHERE created_at < ?", (cutoff,)
            )
            jobs = await self._db.execute(
                "DELETE FROM jobs WHERE updated_at < ?"
                " AND (status IN ('delivered', 'failed') OR held)",
                (cutoff,),
            )
            parts = await self._db.execute(
                "DELETE FROM album_parts WHERE created_at < ?", (cutoff,)
            )
            deleted = messages.rowcount + jobs.rowcount + parts.rowcount
            await self._db.execute(
                "DELETE FROM erased_messages WHERE erased_at < ?",
                ((datetime.now(UTC) - ERASED_MESSAGES_KEPT).isoformat(),),
            )
        if deleted:
            async with self._lock:
                await self._erase_old_copies()
        return deleted
