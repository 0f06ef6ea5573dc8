"""The messages table: each user's conversation in each chat, the newest
`max_stored_messages` kept per (chat, user)."""

from __future__ import annotations

from collections.abc import Sequence

from bot.storage.database import Database
from bot.storage.records import (
    MESSAGE_COLS,
    ROLES,
    StoredMessage,
    file_id_columns,
    message_from_row,
    utc_now,
)

# a user's messages in a chat from their `max_turns`-th last turn on, what a prompt takes;
# its parameters: (chat_id, user_id, chat_id, user_id, max_turns)
RECENT_TURNS = (
    "chat_id = ? AND user_id = ? AND id >= (SELECT MIN(id) FROM (SELECT id FROM messages"
    " WHERE chat_id = ? AND user_id = ? AND role = 'user' ORDER BY id DESC LIMIT ?))"
)


class HistoryStore(Database):
    async def add_message(
        self,
        chat_id: int,
        user_id: int,
        role: str,
        text: str,
        *,
        image_file_id: str | None = None,
        image_file_ids: Sequence[str] = (),
    ) -> StoredMessage:
        """Store one message (with its photo, or an album's pages), then keep only the
        newest `max_stored_messages` of this user in this chat."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        file_ids = image_file_ids or ((image_file_id,) if image_file_id else ())
        async with self._transaction():
            return await self._insert_message(chat_id, user_id, role, text, file_ids)

    async def _insert_message(
        self,
        chat_id: int,
        user_id: int,
        role: str,
        text: str,
        file_ids: Sequence[str],
        *,
        photo_from: int | None = None,
    ) -> StoredMessage:
        row = await self._one(
            "INSERT INTO messages (chat_id, user_id, role, text, image_file_id, image_file_ids,"
            f" photo_from, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {MESSAGE_COLS}",
            (chat_id, user_id, role, text, *file_id_columns(file_ids), photo_from, utc_now()),
        )
        await self._db.execute(
            "DELETE FROM messages WHERE chat_id = ? AND user_id = ? AND id <= (SELECT id"
            " FROM messages WHERE chat_id = ? AND user_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (chat_id, user_id, chat_id, user_id, self._max_stored),
        )
        return message_from_row(row)

    async def get_history(
        self, chat_id: int, user_id: int, *, max_turns: int
    ) -> list[StoredMessage]:
        """The last `max_turns` turns of this user in this chat, oldest first, always
        starting with a user message."""
        if max_turns <= 0:
            return []
        rows = await self._all(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE {RECENT_TURNS} ORDER BY id",
            (chat_id, user_id, chat_id, user_id, max_turns),
        )
        return [message_from_row(r) for r in rows]

    async def get_last_image_file_id(self, chat_id: int, user_id: int) -> str | None:
        row = await self._one(
            "SELECT image_file_id FROM messages WHERE chat_id = ? AND user_id = ?"
            " AND image_file_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            (chat_id, user_id),
        )
        return row[0] if row else None

    async def get_message(self, message_id: int) -> StoredMessage | None:
        """One history row; None once retention, trimming or /forget removed it."""
        row = await self._one(f"SELECT {MESSAGE_COLS} FROM messages WHERE id = ?", (message_id,))
        return message_from_row(row) if row else None

    async def get_photo_turn(self, answer: StoredMessage) -> StoredMessage | None:
        """The traveller's turn that `answer` (a model row) answered, where it had photos:
        the newest user row before it, in its chat, of its user."""
        row = await self._one(
            f"SELECT {MESSAGE_COLS} FROM messages WHERE chat_id = ? AND user_id = ?"
            " AND role = 'user' AND id < ? ORDER BY id DESC LIMIT 1",
            (answer.chat_id, answer.user_id, answer.id),
        )
        turn = message_from_row(row) if row else None
        return turn if turn is not None and turn.image_file_ids else None
