"""The users table: one row per user with their settings (reply language, thinking mode,
/overlay); created on first use with defaults."""

from __future__ import annotations

from bot.storage.database import Database
from bot.storage.records import USER_COLS, User, user_from_row, utc_now


class UserStore(Database):
    async def get_user(self, user_id: int) -> User | None:
        row = await self._one(f"SELECT {USER_COLS} FROM users WHERE user_id = ?", (user_id,))
        return user_from_row(row) if row else None

    async def get_or_create_user(self, user_id: int, *, default_language: str) -> tuple[User, bool]:
        now = utc_now()
        async with self._transaction():
            cur = await self._db.execute(
                f"INSERT OR IGNORE INTO users ({USER_COLS}) VALUES (?, ?, 0, ?, ?)",
                (user_id, default_language, now, now),
            )
            created = cur.rowcount == 1
            user = await self.get_user(user_id)
        assert user is not None
        return user, created

    async def count_users(self) -> int:
        (count,) = await self._one("SELECT COUNT(*) FROM users")
        return int(count)

    async def set_language(self, user_id: int, language: str) -> User:
        """Set the reply language, creating the user (think off) if missing."""
        return await self._upsert(user_id, "language", language, False)

    async def set_think(self, user_id: int, think: bool) -> User:
        """Set thinking mode, creating the user (language "en") if missing."""
        return await self._upsert(user_id, "think", "en", think)

    async def _upsert(self, user_id: int, column: str, language: str, think: bool) -> User:
        """Insert the user with these values, or update only `column` if the row exists."""
        now = utc_now()
        sql = (
            f"INSERT INTO users ({USER_COLS}) VALUES (?, ?, ?, ?, ?)"
            f" ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column},"
            f" updated_at = excluded.updated_at RETURNING {USER_COLS}"
        )
        async with self._transaction():
            row = await self._one(sql, (user_id, language, int(think), now, now))
        return user_from_row(row)

    async def get_overlay(self, user_id: int) -> bool:
        """Whether the user asked for the translation drawn on every photo (/overlay on)."""
        row = await self._one("SELECT overlay FROM users WHERE user_id = ?", (user_id,))
        return bool(row and row[0])

    async def set_overlay(self, user_id: int, on: bool, *, default_language: str) -> None:
        """/overlay on|off, creating the user with `default_language` if missing."""
        now = utc_now()
        async with self._transaction():
            await self._add_user_if_missing(user_id, default_language, now)
            await self._db.execute(
                "UPDATE users SET overlay = ?, updated_at = ? WHERE user_id = ?",
                (int(on), now, user_id),
            )

    async def _add_user_if_missing(self, user_id: int, language: str, now: str) -> None:
        """In a transaction: the user's row with defaults (think off) where there is none."""
        await self._db.execute(
            f"INSERT OR IGNORE INTO users ({USER_COLS}) VALUES (?, ?, 0, ?, ?)",
            (user_id, language, now, now),
        )
