"""/diet: the user's dietary needs, kept as JSON in their users row (NULL: none set)."""

from __future__ import annotations

from collections.abc import Callable

from bot.storage.records import diet_from_json, diet_to_json, utc_now
from bot.storage.users import UserStore
from inference.types import Diet


class DietStore(UserStore):
    async def get_diet(self, user_id: int) -> Diet:
        row = await self._one("SELECT diet FROM users WHERE user_id = ?", (user_id,))
        return diet_from_json(row[0]) if row else Diet()

    async def change_diet(
        self, user_id: int, change: Callable[[Diet], Diet], *, default_language: str
    ) -> Diet:
        """Replace the user's diet by `change(current diet)` in one transaction (two quick
        taps never lose one), creating the user with `default_language` if missing; an empty
        diet is stored as none. Returns the new diet."""
        now = utc_now()
        async with self._transaction():
            await self._add_user_if_missing(user_id, default_language, now)
            (stored,) = await self._one("SELECT diet FROM users WHERE user_id = ?", (user_id,))
            diet = change(diet_from_json(stored))
            await self._db.execute(
                "UPDATE users SET diet = ?, updated_at = ? WHERE user_id = ?",
                (diet_to_json(diet), now, user_id),
            )
        return diet
