"""Tombstones of erased messages (erased_messages), as keyed digests only: Telegram may
deliver an update again (up to 24 hours) after a crash, which must not bring erased words
back. The HMAC key lives in the keys table, made by the migration."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from bot.storage.database import Database

ERASED_MESSAGES_KEPT = timedelta(days=1)  # Telegram keeps an undelivered update 24 hours


class ErasureStore(Database):
    _erased_key = b""  # HMAC key of erased_messages' digests (_load_erased_key)

    async def _load_erased_key(self) -> None:
        (self._erased_key,) = await self._one(
            "SELECT value FROM keys WHERE name = 'erased_messages'"
        )

    def _erased_digest(self, *parts: object) -> bytes:
        return hmac.digest(self._erased_key, ":".join(map(str, parts)).encode(), "sha256")

    async def _is_erased(self, chat_id: int, message_id: int) -> bool:
        row = await self._one(
            "SELECT 1 FROM erased_messages WHERE digest = ?",
            (self._erased_digest(chat_id, message_id),),
        )
        return row is not None

    async def get_erased_at(self, user_id: int) -> datetime | None:
        """When the user last said /forget, within the last day (ERASED_MESSAGES_KEPT):
        a message of theirs from before then that Telegram delivers again is not taken."""
        row = await self._one(
            "SELECT erased_at FROM erased_messages WHERE digest = ?",
            (self._erased_digest("user", user_id),),
        )
        return datetime.fromisoformat(row[0]) if row else None
