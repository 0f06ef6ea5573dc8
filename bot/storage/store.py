"""Storage: every table's methods on one connection (see the modules of bot/storage/)."""

from __future__ import annotations

from pathlib import Path

from bot.storage.privacy import PrivacyStore
from bot.storage.schema import connect


class Storage(PrivacyStore):
    """One aiosqlite connection in WAL mode; writes are serialised by a lock."""

    @classmethod
    async def open(
        cls, path: str | Path, *, max_stored_messages: int = 200, busy_timeout_s: float = 5.0
    ) -> Storage:
        """Open (creating if needed) the database and bring its schema up to date."""
        if max_stored_messages < 1:
            raise ValueError("max_stored_messages must be at least 1")
        db = await connect(Path(path), busy_timeout_s=busy_timeout_s)
        try:
            storage = cls(db, max_stored_messages)
            await storage._migrate()
            await storage._load_erased_key()
        except BaseException:
            await db.close()
            raise
        return storage

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
