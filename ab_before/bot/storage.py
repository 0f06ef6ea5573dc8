"""Per-user settings and conversation history in SQLite (aiosqlite, stdlib only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

ROLES = ("user", "model")

# Ordered schema migrations: MIGRATIONS[i] brings the database to version i + 1.
# Append new lists at the end; never edit one that has shipped.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE users (
            user_id INTEGER PRIMARY KEY,
            language TEXT NOT NULL,
            think INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'model')),
            text TEXT NOT NULL,
            image_file_id TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX messages_user_id ON messages (user_id, id)",
    ],
    [
        # An accepted photo or question, recorded before it is queued, until it is delivered.
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            chat_type TEXT NOT NULL,
            question TEXT,
            image_file_id TEXT,
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'answered', 'delivered', 'failed')),
            answer TEXT,
            thought TEXT,
            placeholder_id INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (chat_id, message_id)
        )""",
        "CREATE INDEX jobs_status ON jobs (status, id)",
        "CREATE INDEX jobs_user_id ON jobs (user_id)",
    ],
]

# Explicit column lists keep queries valid when later migrations add columns.
_USER_COLS = "user_id, language, think, created_at, updated_at"
_MESSAGE_COLS = "id, user_id, role, text, image_file_id, created_at"
_JOB_COLS = (
    "id, chat_id, message_id, user_id, chat_type, question, image_file_id, status,"
    " answer, thought, placeholder_id, attempts"
)
UNFINISHED = ("pending", "answered")


@dataclass(frozen=True)
class User:
    user_id: int
    language: str
    think: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredMessage:
    id: int
    user_id: int
    role: str
    text: str
    image_file_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class UserData:
    """Everything kept about one user (for /mydata)."""

    user: User | None
    messages: list[StoredMessage]


@dataclass(frozen=True)
class Job:
    """A user's photo or question, from acceptance until the answer is delivered."""

    id: int
    chat_id: int
    message_id: int  # the user's message, unique per chat: Telegram redelivery finds it
    user_id: int
    chat_type: str
    question: str | None
    image_file_id: str | None
    status: str  # pending → answered (answer stored) → delivered; or failed
    answer: str | None
    thought: str | None
    placeholder_id: int | None  # the bot's "Reading your photo…" message, if sent
    attempts: int


class TooManyJobs(Exception):
    """The user already waits for as many answers as allowed."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _user(row: Sequence[Any]) -> User:
    uid, language, think, created, updated = row
    return User(
        uid, language, bool(think), datetime.fromisoformat(created), datetime.fromisoformat(updated)
    )


def _message(row: Sequence[Any]) -> StoredMessage:
    mid, uid, role, text, image_file_id, created = row
    return StoredMessage(mid, uid, role, text, image_file_id, datetime.fromisoformat(created))


class Storage:
    """One aiosqlite connection in WAL mode; writes are serialised by a lock."""

    def __init__(self, db: aiosqlite.Connection, max_stored_messages: int) -> None:
        self._db = db
        self._max_stored = max_stored_messages
        self._lock = asyncio.Lock()
        self._schema_version = 0

    @classmethod
    async def open(cls, path: str | Path, *, max_stored_messages: int = 200) -> Storage:
        """Open (creating if needed) the database and bring its schema up to date."""
        if max_stored_messages < 1:
            raise ValueError("max_stored_messages must be at least 1")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
                await db.execute(f"PRAGMA {pragma}")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA secure_delete=ON")  # erased data is overwritten
            storage = cls(db, max_stored_messages)
            await storage._migrate()
        except BaseException:
            await db.close()
            raise
        return storage

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def schema_version(self) -> int:
        return self._schema_version

    async def check_writable(self) -> None:
        """Commit a real write (for /readyz): the schema version written again, unchanged.
        Raises if the database cannot be written (closed, read-only, disk full)."""
        async with self._transaction():
            await self._db.execute(f"PRAGMA user_version = {int(self._schema_version)}")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), one writer at a time."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None."""
        async with self._db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, params))

    async def _migrate(self) -> None:
        for version, statements in enumerate(MIGRATIONS, start=1):
            async with self._transaction():
                (current,) = await self._one("PRAGMA user_version")  # re-read under the lock
                if current > len(MIGRATIONS):
                    raise RuntimeError(f"database schema v{current} is newer than this code")
                if current >= version:
                    continue
                for sql in statements:
                    await self._db.execute(sql)
                await self._db.execute(f"PRAGMA user_version = {version}")
        (self._schema_version,) = await self._one("PRAGMA user_version")

    async def get_user(self, user_id: int) -> User | None:
        row = await self._one(f"SELECT {_USER_COLS} FROM users WHERE user_id = ?", (user_id,))
        return _user(row) if row else None

    async def get_or_create_user(self, user_id: int, *, default_language: str) -> tuple[User, bool]:
        now = _now()
        async with self._transaction():
            cur = await self._db.execute(
                f"INSERT OR IGNORE INTO users ({_USER_COLS}) VALUES (?, ?, 0, ?, ?)",
                (user_id, default_language, now, now),
            )
            created = cur.rowcount == 1
            user = await self.get_user(user_id)
        assert user is not None
        return user, created

    async def _upsert(self, user_id: int, column: str, language: str, think: bool) -> User:
        """Insert the user with these values, or update only `column` if the row exists."""
        now = _now()
        sql = (
            f"INSERT INTO users ({_USER_COLS}) VALUES (?, ?, ?, ?, ?)"
            f" ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column},"
            f" updated_at = excluded.updated_at RETURNING {_USER_COLS}"
        )
        async with self._transaction():
            row = await self._one(sql, (user_id, language, int(think), now, now))
        return _user(row)

    async def set_language(self, user_id: int, language: str) -> User:
        """Set the reply language, creating the user (think off) if missing."""
        return await self._upsert(user_id, "language", language, False)

    async def set_think(self, user_id: int, think: bool) -> User:
        """Set thinking mode, creating the user (language "en") if missing."""
        return await self._upsert(user_id, "think", "en", think)

    async def add_message(
        self, user_id: int, role: str, text: str, *, image_file_id: str | None = None
    ) -> StoredMessage:
        """Store one message, then keep only this user's newest `max_stored_messages`."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        async with self._transaction():
            return await self._insert_message(user_id, role, text, image_file_id)

    async def _insert_message(
        self, user_id: int, role: str, text: str, image_file_id: str | None
    ) -> StoredMessage:
        row = await self._one(
            f"INSERT INTO messages (user_id, role, text, image_file_id, created_at)"
            f" VALUES (?, ?, ?, ?, ?) RETURNING {_MESSAGE_COLS}",
            (user_id, role, text, image_file_id, _now()),
        )
        await self._db.execute(
            "DELETE FROM messages WHERE user_id = ? AND id <= (SELECT id FROM messages"
            " WHERE user_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (user_id, user_id, self._max_stored),
        )
        return _message(row)

    async def get_history(self, user_id: int, *, max_turns: int) -> list[StoredMessage]:
        """The last `max_turns` turns, oldest first, always starting with a user message."""
        if max_turns <= 0:
            return []
        rows = await self._all(
            f"SELECT {_MESSAGE_COLS} FROM messages WHERE user_id = ? AND id >= ("
            " SELECT MIN(id) FROM (SELECT id FROM messages WHERE user_id = ? AND role = 'user'"
            " ORDER BY id DESC LIMIT ?)) ORDER BY id",
            (user_id, user_id, max_turns),
        )
        return [_message(r) for r in rows]

    async def get_last_image_file_id(self, user_id: int) -> str | None:
        row = await self._one(
            "SELECT image_file_id FROM messages WHERE user_id = ?"
            " AND image_file_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            (user_id,),
        )
        return row[0] if row else None

    async def get_user_data(self, user_id: int) -> UserData:
        rows = await self._all(
            f"SELECT {_MESSAGE_COLS} FROM messages WHERE user_id = ? ORDER BY id", (user_id,)
        )
        return UserData(await self.get_user(user_id), [_message(r) for r in rows])

    async def delete_user_data(self, user_id: int) -> int:
        """Delete the user row and all their messages atomically; return rows deleted."""
        async with self._transaction():
            count = 0
            for table in ("users", "messages", "jobs"):
                cursor = await self._db.execute(
                    f"DELETE FROM {table} WHERE user_id = ?", (user_id,)
                )
                count += cursor.rowcount
            return count

    # -- jobs ---------------------------------------------------------------------------------
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
    ) -> Job | None:
        """Record an accepted request; None if that message already has a job (redelivery).
        Raises TooManyJobs when the user already has `max_unfinished` unanswered jobs.
        A user seen for the first time is stored with `language`, for recovery too."""
        now = _now()
        async with self._transaction():
            await self._db.execute(
                f"INSERT OR IGNORE INTO users ({_USER_COLS}) VALUES (?, ?, 0, ?, ?)",
                (user_id, language, now, now),
            )
            if max_unfinished is not None:
                (count,) = await self._one(
                    f"SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN {UNFINISHED}",
                    (user_id,),
                )
                if count >= max_unfinished:
                    raise TooManyJobs(count)
            row = await self._one(
                "INSERT INTO jobs (chat_id, message_id, user_id, chat_type, question,"
                " image_file_id, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                f" ON CONFLICT (chat_id, message_id) DO NOTHING RETURNING {_JOB_COLS}",
                (chat_id, message_id, user_id, chat_type, question, image_file_id, now, now),
            )
        return Job(*row) if row else None

    async def start_job_attempt(self, job_id: int) -> int:
        """Count one more run of the job; return the number of runs so far."""
        async with self._transaction():
            (attempts,) = await self._one(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE id = ?"
                " RETURNING attempts",
                (_now(), job_id),
            )
        return int(attempts)

    async def set_job_placeholder(self, job_id: int, message_id: int) -> None:
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET placeholder_id = ?, updated_at = ? WHERE id = ?",
                (message_id, _now(), job_id),
            )

    async def complete_job(self, job: Job, *, answer: str, thought: str) -> None:
        """Store the answer and both sides of the turn in the history, atomically."""
        async with self._transaction():
            await self._insert_message(job.user_id, "user", job.question or "", job.image_file_id)
            await self._insert_message(job.user_id, "model", answer, None)
            await self._db.execute(
                "UPDATE jobs SET status = 'answered', answer = ?, thought = ?, updated_at = ?"
                " WHERE id = ?",
                (answer, thought, _now(), job.id),
            )

    async def set_job_status(self, job_id: int, status: str) -> None:
        """'delivered' or 'failed'; the answer text is dropped (the history keeps it)."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET status = ?, answer = NULL, thought = NULL, updated_at = ?"
                " WHERE id = ?",
                (status, _now(), job_id),
            )

    async def get_unfinished_jobs(self) -> list[Job]:
        rows = await self._all(
            f"SELECT {_JOB_COLS} FROM jobs WHERE status IN {UNFINISHED} ORDER BY id"
        )
        return [Job(*row) for row in rows]

    async def delete_older_than(self, days: float) -> int:
        """Retention: drop history and finished jobs older than `days`; return rows deleted."""
        cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat()
        async with self._transaction():
            messages = await self._db.execute(
                "DELETE FROM messages WHERE created_at < ?", (cutoff,)
            )
            jobs = await self._db.execute(
                "DELETE FROM jobs WHERE updated_at < ? AND status IN ('delivered', 'failed')",
                (cutoff,),
            )
            return messages.rowcount + jobs.rowcount

    async def count_jobs_by_status(self) -> dict[str, int]:
        rows = await self._all("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {status: int(count) for status, count in rows}

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._one(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return Job(*row) if row else None

    async def count_users(self) -> int:
        (count,) = await self._one("SELECT COUNT(*) FROM users")
        return int(count)
