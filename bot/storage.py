"""Per-user settings and conversation history in SQLite (aiosqlite, stdlib only).

Who and where: `user_id` is whom the bot keeps data about (a Telegram user, or the chat an
anonymous group admin or a channel speaks as); `chat_id` is where it was said. History is
kept per (chat_id, user_id): nothing said in one chat is read back in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from inference.types import DIET_CODES, MAX_DIET_NOTE_CHARS, MAX_DIET_NOTES, Diet

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
    [
        # History per chat: rows from before were all read as the user's own, so they go to
        # the user's private chat (chat id = user id), never into a group.
        "ALTER TABLE messages ADD COLUMN chat_id INTEGER NOT NULL DEFAULT 0",
        "UPDATE messages SET chat_id = user_id",
        "CREATE INDEX messages_chat_user ON messages (chat_id, user_id, id)",
        # How many parts of a stored answer Telegram has accepted: a restart sends the rest.
        "ALTER TABLE jobs ADD COLUMN parts_sent INTEGER NOT NULL DEFAULT 0",
    ],
    [
        # Messages of erased users, as keyed digests only: Telegram may deliver an update
        # again (up to 24 hours) after a crash, which must not bring erased words back.
        """CREATE TABLE erased_messages (
            digest BLOB PRIMARY KEY,
            erased_at TEXT NOT NULL
        )""",
        "CREATE TABLE keys (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
        "INSERT INTO keys VALUES ('erased_messages', randomblob(32))",
    ],
    [
        # /diet: {"codes": [...], "notes": [...]} as JSON; NULL: none set
        "ALTER TABLE users ADD COLUMN diet TEXT",
    ],
    [
        # The bot's answers about a photo in a group, by Telegram message: a member's reply
        # to one asks about that photo. Gone with the job (its user's /forget, retention).
        """CREATE TABLE answer_messages (
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            PRIMARY KEY (chat_id, message_id)
        )""",
        "CREATE INDEX answer_messages_job_id ON answer_messages (job_id)",
    ],
    [
        # The stored answer's history row: its "Show to staff" buttons name it, also when the
        # answer is delivered after a restart.
        "ALTER TABLE jobs ADD COLUMN answer_history_id INTEGER",
    ],
    [
        # An album's pages: JSON list of file ids where a turn has more than one photo;
        # image_file_id keeps the first, so rows from before read as they were.
        "ALTER TABLE messages ADD COLUMN image_file_ids TEXT",
        "ALTER TABLE jobs ADD COLUMN image_file_ids TEXT",
        # The parts of an album (Telegram: one message each, same media_group_id) while
        # they arrive; closed into one job (job_id set, file id and caption dropped), kept
        # so that a part delivered again is not taken twice. Gone with /forget, retention.
        """CREATE TABLE album_parts (
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            media_group_id TEXT NOT NULL,
            chat_type TEXT NOT NULL,
            file_id TEXT,
            file_size INTEGER,
            caption TEXT,
            job_id INTEGER,
            created_at TEXT NOT NULL,
            PRIMARY KEY (chat_id, message_id)
        )""",
        "CREATE INDEX album_parts_group ON album_parts (chat_id, media_group_id, job_id)",
        "CREATE INDEX album_parts_user_id ON album_parts (user_id)",
    ],
    [
        # /currency: the home currency (ISO 4217; NULL: not set), and whether the bot has
        # asked for it once; rates the user set (1 unit of `currency` = `rate` home units)
        "ALTER TABLE users ADD COLUMN currency TEXT",
        "ALTER TABLE users ADD COLUMN currency_asked INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE user_rates (
            user_id INTEGER NOT NULL,
            currency TEXT NOT NULL,
            rate REAL NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (user_id, currency)
        )""",
        # The ECB's daily reference rates (units per euro), the last ones fetched
        """CREATE TABLE reference_rates (
            currency TEXT PRIMARY KEY,
            per_euro REAL NOT NULL,
            rates_date TEXT NOT NULL,
            fetched_at TEXT NOT NULL
        )""",
    ],
    [
        # A photo the quick check flagged (blurred, dark ...): pending, but neither queued,
        # counted in flight nor recovered until its sender taps "Ask anyway" (release_job).
        "ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0",
    ],
    [
        # /overlay on: the translation drawn on each photo answered, without the button
        "ALTER TABLE users ADD COLUMN overlay INTEGER NOT NULL DEFAULT 0",
    ],
]
ERASED_MESSAGES_KEPT = timedelta(days=1)  # Telegram keeps an undelivered update 24 hours

# Explicit column lists keep queries valid when later migrations add columns.
_USER_COLS = "user_id, language, think, created_at, updated_at"
_MESSAGE_COLS = "id, chat_id, user_id, role, text, image_file_id, created_at, image_file_ids"
_JOB_COLS = (
    "id, chat_id, message_id, user_id, chat_type, question, image_file_id, status,"
    " answer, thought, placeholder_id, attempts, parts_sent, answer_history_id, image_file_ids"
)
_PART_COLS = "chat_id, message_id, user_id, media_group_id, chat_type, file_id, file_size, caption"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
T = TypeVar("T")
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
    chat_id: int
    user_id: int
    role: str
    text: str
    image_file_id: str | None
    created_at: datetime
    image_file_ids: tuple[str, ...] = ()  # the photos of the turn: one, or an album's pages


@dataclass(frozen=True)
class CurrencyChoice:
    """The user's home currency and the rates they set themselves."""

    code: str | None  # ISO 4217; None: not set
    asked: bool  # the bot has asked for it once
    own_rates: dict[str, float] = field(default_factory=dict)  # 1 unit = rate home units


@dataclass(frozen=True)
class UserData:
    """Everything kept about one user (for /mydata)."""

    user: User | None
    messages: list[StoredMessage]
    diet: Diet = field(default_factory=Diet)
    currency: CurrencyChoice = field(default_factory=lambda: CurrencyChoice(None, False))
    overlay: bool = False  # /overlay on


@dataclass(frozen=True)
class ReferenceRates:
    """Units of each currency per euro, as the ECB published them on `date`."""

    per_euro: dict[str, float]
    date: str  # the ECB's date of the rates, YYYY-MM-DD
    fetched_at: datetime


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
    parts_sent: int  # messages of the answer Telegram has accepted
    answer_history_id: int | None = None  # the answer's row in messages, once stored
    image_file_ids: tuple[str, ...] = ()  # the photos asked about: one, or an album's pages


@dataclass(frozen=True)
class AlbumPart:
    """One photo or image file of an album, as it arrived."""

    chat_id: int
    message_id: int
    user_id: int
    media_group_id: str
    chat_type: str
    file_id: str
    file_size: int | None
    caption: str | None


class TooManyJobs(Exception):
    """The user already waits for as many answers as allowed."""


class _AlbumGone(Exception):
    """An album's parts were erased or closed meanwhile."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _user(row: Sequence[Any]) -> User:
    uid, language, think, created, updated = row
    return User(
        uid, language, bool(think), datetime.fromisoformat(created), datetime.fromisoformat(updated)
    )


def _message(row: Sequence[Any]) -> StoredMessage:
    *fields, created, ids = row
    return StoredMessage(*fields, datetime.fromisoformat(created), _file_ids(fields[5], ids))


def _job(row: Sequence[Any]) -> Job:
    *fields, ids = row
    return Job(*fields, _file_ids(fields[6], ids))


def _file_ids(first: str | None, stored: str | None) -> tuple[str, ...]:
    """All photos of a row: the stored list (an album), else the one photo (older rows)."""
    if stored:
        return tuple(json.loads(stored))
    return (first,) if first else ()


def _stored_ids(file_ids: Sequence[str]) -> tuple[str | None, str | None]:
    """(image_file_id, image_file_ids) columns for a turn's photos."""
    first = file_ids[0] if file_ids else None
    return first, json.dumps(list(file_ids)) if len(file_ids) > 1 else None


def _diet(value: str | None) -> Diet:
    """A stored diet, read defensively: codes this version does not know are dropped, and
    notes are bounded as when they were set."""
    try:
        stored = json.loads(value) if value else {}
        codes = [c for c in stored.get("codes", ()) if c in DIET_CODES]
        notes = [str(n)[:MAX_DIET_NOTE_CHARS] for n in stored.get("notes", ())]
    except (ValueError, AttributeError, TypeError):
        return Diet()
    return Diet(tuple(codes), tuple(notes[:MAX_DIET_NOTES]))


async def _to_the_end(awaitable: Awaitable[T]) -> T:
    """Await a statement that must finish even if the caller is cancelled: aiosqlite runs it
    in its own thread anyway, and a BEGIN or COMMIT left behind would leave the connection
    inside a transaction for every later caller. Cancellation is raised after it is done."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


def _create_private(path: Path) -> None:
    """The database files readable by the bot's user alone, however it was started (SQLite
    creates the -wal and -shm files with the database file's mode)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists():
            file.chmod(PRIVATE_FILE_MODE)


class Storage:
    """One aiosqlite connection in WAL mode; writes are serialised by a lock."""

    def __init__(self, db: aiosqlite.Connection, max_stored_messages: int) -> None:
        self._db = db
        self._max_stored = max_stored_messages
        self._lock = asyncio.Lock()
        self._schema_version = 0
        self._erased_key = b""  # HMAC key of erased_messages' digests (read in open)
        self.write_error: str | None = None  # the last write's database error, until one works

    @classmethod
    async def open(
        cls, path: str | Path, *, max_stored_messages: int = 200, busy_timeout_s: float = 5.0
    ) -> Storage:
        """Open (creating if needed) the database and bring its schema up to date."""
        if max_stored_messages < 1:
            raise ValueError("max_stored_messages must be at least 1")
        _create_private(Path(path))
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
                await db.execute(f"PRAGMA {pragma}")
            await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            await db.execute("PRAGMA secure_delete=ON")  # erased data is overwritten
            storage = cls(db, max_stored_messages)
            await storage._migrate()
            (storage._erased_key,) = await storage._one(
                "SELECT value FROM keys WHERE name = 'erased_messages'"
            )
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

    async def check_readable(self) -> None:
        """A read of the jobs table (for /readyz, which must not write). Raises if the
        database cannot be read."""
        await self._one("SELECT COUNT(*) FROM jobs WHERE status = 'pending'")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), one writer at a time."""
        async with self._lock, self._transaction_locked():
            yield

    @asynccontextmanager
    async def _transaction_locked(self) -> AsyncIterator[None]:
        """A transaction under the held write lock. Safe to cancel at any await: the
        connection is never left inside a transaction."""
        try:
            await _to_the_end(self._db.execute("BEGIN IMMEDIATE"))
            yield
            await _to_the_end(self._db.execute("COMMIT"))
        except BaseException as exc:
            # a statement cancelled mid-way still runs in aiosqlite's thread: ROLLBACK is
            # queued after it there
            if self._db.in_transaction:
                await _to_the_end(self._db.execute("ROLLBACK"))
            if isinstance(exc, sqlite3.Error):
                self._write_failed(exc)
            raise
        self.write_error = None

    def _write_failed(self, exc: sqlite3.Error) -> None:
        self.write_error = f"{type(exc).__name__}: {exc}"

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

    async def _erase_old_copies(self) -> None:
        """After a delete: copy the WAL into the database and empty it, so that the deleted
        rows' earlier page images in the WAL are gone too (secure_delete zeroes them in the
        database itself). Called under the write lock, right after the delete's COMMIT."""
        await _to_the_end(self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))

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
        self, chat_id: int, user_id: int, role: str, text: str, file_ids: Sequence[str]
    ) -> StoredMessage:
        row = await self._one(
            "INSERT INTO messages (chat_id, user_id, role, text, image_file_id, image_file_ids,"
            f" created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_MESSAGE_COLS}",
            (chat_id, user_id, role, text, *_stored_ids(file_ids), _now()),
        )
        await self._db.execute(
            "DELETE FROM messages WHERE chat_id = ? AND user_id = ? AND id <= (SELECT id"
            " FROM messages WHERE chat_id = ? AND user_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (chat_id, user_id, chat_id, user_id, self._max_stored),
        )
        return _message(row)

    async def get_history(
        self, chat_id: int, user_id: int, *, max_turns: int
    ) -> list[StoredMessage]:
        """The last `max_turns` turns of this user in this chat, oldest first, always
        starting with a user message."""
        if max_turns <= 0:
            return []
        rows = await self._all(
            f"SELECT {_MESSAGE_COLS} FROM messages WHERE chat_id = ? AND user_id = ? AND id >= ("
            " SELECT MIN(id) FROM (SELECT id FROM messages WHERE chat_id = ? AND user_id = ?"
            " AND role = 'user' ORDER BY id DESC LIMIT ?)) ORDER BY id",
            (chat_id, user_id, chat_id, user_id, max_turns),
        )
        return [_message(r) for r in rows]

    async def get_last_image_file_id(self, chat_id: int, user_id: int) -> str | None:
        row = await self._one(
            "SELECT image_file_id FROM messages WHERE chat_id = ? AND user_id = ?"
            " AND image_file_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            (chat_id, user_id),
        )
        return row[0] if row else None

    async def get_message(self, message_id: int) -> StoredMessage | None:
        """One history row; None once retention, trimming or /forget removed it."""
        row = await self._one(f"SELECT {_MESSAGE_COLS} FROM messages WHERE id = ?", (message_id,))
        return _message(row) if row else None

    async def get_user_data(self, user_id: int) -> UserData:
        """Everything kept about the user, in every chat (for /mydata in private)."""
        rows = await self._all(
            f"SELECT {_MESSAGE_COLS} FROM messages WHERE user_id = ? ORDER BY id", (user_id,)
        )
        user = await self.get_user(user_id)
        diet, currency = await self.get_diet(user_id), await self.get_currency(user_id)
        overlay = await self.get_overlay(user_id)
        return UserData(user, [_message(r) for r in rows], diet, currency, overlay)

    async def get_overlay(self, user_id: int) -> bool:
        """Whether the user asked for the translation drawn on every photo (/overlay on)."""
        row = await self._one("SELECT overlay FROM users WHERE user_id = ?", (user_id,))
        return bool(row and row[0])

    async def set_overlay(self, user_id: int, on: bool, *, default_language: str) -> None:
        """/overlay on|off, creating the user with `default_language` if missing."""
        now = _now()
        async with self._transaction():
            await self._add_user_if_missing(user_id, default_language, now)
            await self._db.execute(
                "UPDATE users SET overlay = ?, updated_at = ? WHERE user_id = ?",
                (int(on), now, user_id),
            )

    async def _add_user_if_missing(self, user_id: int, language: str, now: str) -> None:
        """In a transaction: the user's row with defaults (think off) where there is none."""
        await self._db.execute(
            f"INSERT OR IGNORE INTO users ({_USER_COLS}) VALUES (?, ?, 0, ?, ?)",
            (user_id, language, now, now),
        )

    async def get_photo_turn(self, answer: StoredMessage) -> StoredMessage | None:
        """The traveller's turn that `answer` (a model row) answered, where it had photos:
        the newest user row before it, in its chat, of its user."""
        row = await self._one(
            f"SELECT {_MESSAGE_COLS} FROM messages WHERE chat_id = ? AND user_id = ?"
            " AND role = 'user' AND id < ? ORDER BY id DESC LIMIT 1",
            (answer.chat_id, answer.user_id, answer.id),
        )
        turn = _message(row) if row else None
        return turn if turn is not None and turn.image_file_ids else None

    async def get_currency(self, user_id: int) -> CurrencyChoice:
        row = await self._one(
            "SELECT currency, currency_asked FROM users WHERE user_id = ?", (user_id,)
        )
        rates = await self._all(
            "SELECT currency, rate FROM user_rates WHERE user_id = ? ORDER BY currency", (user_id,)
        )
        code, asked = row if row else (None, 0)
        return CurrencyChoice(code, bool(asked), {c: float(r) for c, r in rates})

    async def set_currency(self, user_id: int, code: str, *, default_language: str) -> None:
        """Set the home currency (creating the user if missing); the rates the user set were
        to the old one, so they go."""
        await self._set_currency_columns(user_id, code, default_language)
        async with self._transaction():
            await self._db.execute("DELETE FROM user_rates WHERE user_id = ?", (user_id,))

    async def set_currency_asked(self, user_id: int, *, default_language: str) -> None:
        await self._set_currency_columns(user_id, None, default_language)

    async def _set_currency_columns(
        self, user_id: int, code: str | None, default_language: str
    ) -> None:
        now = _now()
        async with self._transaction():
            await self._add_user_if_missing(user_id, default_language, now)
            await self._db.execute(
                "UPDATE users SET currency = COALESCE(?, currency), currency_asked = 1,"
                " updated_at = ? WHERE user_id = ?",
                (code, now, user_id),
            )

    async def set_own_rate(self, user_id: int, currency: str, rate: float) -> None:
        async with self._transaction():
            await self._db.execute(
                "INSERT OR REPLACE INTO user_rates VALUES (?, ?, ?, ?)",
                (user_id, currency, rate, _now()),
            )

    async def get_reference_rates(self) -> ReferenceRates | None:
        rows = await self._all(
            "SELECT currency, per_euro, rates_date, fetched_at FROM reference_rates"
        )
        if not rows:
            return None
        return ReferenceRates(
            {code: float(rate) for code, rate, _, _ in rows},
            rows[0][2],
            datetime.fromisoformat(rows[0][3]),
        )

    async def set_reference_rates(self, per_euro: dict[str, float], date: str) -> None:
        """Replace the kept rates by a newer publication."""
        now = _now()
        async with self._transaction():
            await self._db.execute("DELETE FROM reference_rates")
            await self._db.executemany(
                "INSERT INTO reference_rates VALUES (?, ?, ?, ?)",
                [(code, rate, date, now) for code, rate in per_euro.items()],
            )

    async def get_diet(self, user_id: int) -> Diet:
        row = await self._one("SELECT diet FROM users WHERE user_id = ?", (user_id,))
        return _diet(row[0]) if row else Diet()

    async def change_diet(
        self, user_id: int, change: Callable[[Diet], Diet], *, default_language: str
    ) -> Diet:
        """Replace the user's diet by `change(current diet)` in one transaction (two quick
        taps never lose one), creating the user with `default_language` if missing; an empty
        diet is stored as none. Returns the new diet."""
        now = _now()
        async with self._transaction():
            await self._db.execute(
                f"INSERT OR IGNORE INTO users ({_USER_COLS}) VALUES (?, ?, 0, ?, ?)",
                (user_id, default_language, now, now),
            )
            (stored,) = await self._one("SELECT diet FROM users WHERE user_id = ?", (user_id,))
            diet = change(_diet(stored))
            value = json.dumps({"codes": diet.codes, "notes": diet.notes}) if diet else None
            await self._db.execute(
                "UPDATE users SET diet = ?, updated_at = ? WHERE user_id = ?",
                (value, now, user_id),
            )
        return diet

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
                        (digest, _now())
                        for digest in [*erased, self._erased_digest("user", user_id)]
                    ],
                )
                parts = await self._all(
                    "SELECT chat_id, message_id FROM album_parts WHERE user_id = ?", (user_id,)
                )
                erased += [self._erased_digest(chat, message) for chat, message in parts]
                await self._db.executemany(
                    "INSERT OR REPLACE INTO erased_messages VALUES (?, ?)",
                    [(digest, _now()) for digest in erased],
                )
                for table in ("users", "messages", "jobs", "album_parts", "user_rates"):
                    cursor = await self._db.execute(
                        f"DELETE FROM {table} WHERE user_id = ?", (user_id,)
                    )
                    count += cursor.rowcount
            await self._erase_old_copies()
            return count

    def _erased_digest(self, *parts: object) -> bytes:
        return hmac.digest(self._erased_key, ":".join(map(str, parts)).encode(), "sha256")

    async def get_erased_at(self, user_id: int) -> datetime | None:
        """When the user last said /forget, within the last day (ERASED_MESSAGES_KEPT):
        a message of theirs from before then that Telegram delivers again is not taken."""
        row = await self._one(
            "SELECT erased_at FROM erased_messages WHERE digest = ?",
            (self._erased_digest("user", user_id),),
        )
        return datetime.fromisoformat(row[0]) if row else None

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
        """Record an accepted request; None if that message already has a job, or had one
        that /forget erased (redelivery). An album's job: close_album.
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
            )

    async def _is_erased(self, chat_id: int, message_id: int) -> bool:
        row = await self._one(
            "SELECT 1 FROM erased_messages WHERE digest = ?",
            (self._erased_digest(chat_id, message_id),),
        )
        return row is not None

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
    ) -> Job | None:
        now = _now()
        await self._db.execute(
            f"INSERT OR IGNORE INTO users ({_USER_COLS}) VALUES (?, ?, 0, ?, ?)",
            (user_id, language, now, now),
        )
        await self._check_room(user_id, max_unfinished)
        row = await self._one(
            "INSERT INTO jobs (chat_id, message_id, user_id, chat_type, question,"
            " image_file_id, image_file_ids, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
            f" ON CONFLICT (chat_id, message_id) DO NOTHING RETURNING {_JOB_COLS}",
            (chat_id, message_id, user_id, chat_type, question, *_stored_ids(file_ids),
             now, now),
        )  # fmt: skip
        return _job(row) if row else None

    # -- albums -------------------------------------------------------------------------------
    async def add_album_part(self, part: AlbumPart) -> bool:
        """Record one arrived part of an album; False when Telegram delivered it before
        (whether its album is still open or closed) or /forget erased it."""
        async with self._transaction():
            if await self._is_erased(part.chat_id, part.message_id):
                return False
            row = await self._one(
                f"INSERT INTO album_parts ({_PART_COLS}, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (chat_id, message_id) DO NOTHING RETURNING 1",
                (*astuple(part), _now()),
            )
        return row is not None

    async def get_open_album(self, chat_id: int, media_group_id: str) -> list[AlbumPart]:
        """The parts of an album not yet closed into a job, in the order they were sent."""
        rows = await self._all(
            f"SELECT {_PART_COLS} FROM album_parts WHERE chat_id = ? AND media_group_id = ?"
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

    async def set_job_file_ids(self, job_id: int, file_ids: Sequence[str]) -> None:
        """The photos a job asks about, when fewer than it was accepted with (an album's
        unreadable pages left out: its history keeps only pages a follow-up can see)."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET image_file_id = ?, image_file_ids = ?, updated_at = ?"
                " WHERE id = ?",
                (*_stored_ids(file_ids), _now(), job_id),
            )

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

    async def hold_job(self, job_id: int) -> None:
        """Keep a pending job back until its user asks for it (release_job)."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET held = 1, updated_at = ? WHERE id = ? AND status = 'pending'",
                (_now(), job_id),
            )

    async def release_job(
        self, job_id: int, user_id: int, *, max_unfinished: int | None = None
    ) -> Job | None:
        """Let `user_id`'s held job run, once; None when it is not theirs, not held (asked
        already) or gone (/forget, retention). Raises TooManyJobs when they already wait
        for `max_unfinished` answers."""
        async with self._transaction():
            row = await self._one(
                f"SELECT {_JOB_COLS} FROM jobs WHERE id = ? AND user_id = ? AND held"
                " AND status = 'pending'",
                (job_id, user_id),
            )
            if row is None:
                return None
            await self._check_room(user_id, max_unfinished)
            await self._db.execute(
                "UPDATE jobs SET held = 0, updated_at = ? WHERE id = ?", (_now(), job_id)
            )
        return _job(row)

    async def start_job_attempt(self, job_id: int) -> int | None:
        """Count one more run of the job; return the number of runs so far, or None when
        the job is gone (its user said /forget)."""
        async with self._transaction():
            row = await self._one(
                "UPDATE jobs SET attempts = attempts + 1, updated_at = ? WHERE id = ?"
                " RETURNING attempts",
                (_now(), job_id),
            )
        return None if row is None else int(row[0])

    async def set_job_placeholder(self, job_id: int, message_id: int) -> None:
        async with self._transaction():
            await self._db.execute(
                "UPDATE jobs SET placeholder_id = ?, updated_at = ? WHERE id = ?",
                (message_id, _now(), job_id),
            )

    async def complete_job(self, job: Job, *, answer: str, thought: str) -> StoredMessage | None:
        """Store the answer and both sides of the turn in the history, atomically; return the
        answer's history row. None, and nothing stored, when the job is no longer pending
        (erased by /forget)."""
        async with self._transaction():
            row = await self._one(
                "UPDATE jobs SET status = 'answered', answer = ?, thought = ?, updated_at = ?"
                " WHERE id = ? AND status = 'pending' RETURNING id",
                (answer, thought, _now(), job.id),
            )
            if row is None:
                return None
            question, images = job.question or "", job.image_file_ids
            await self._insert_message(job.chat_id, job.user_id, "user", question, images)
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
                    (parts_sent, _now(), job_id),
                )
                return
            await self._finish_job_locked(job_id, "delivered", parts_sent=parts_sent)

    async def get_answered_photo(self, chat_id: int, message_id: int) -> str | None:
        """The file id of the photo that the bot's message `message_id` in `chat_id`
        answers, if it is one of its answers about a photo in a group."""
        row = await self._one(
            "SELECT j.image_file_id FROM answer_messages AS a JOIN jobs AS j ON j.id = a.job_id"
            " WHERE a.chat_id = ? AND a.message_id = ?",
            (chat_id, message_id),
        )
        return row[0] if row else None

    async def set_job_status(self, job_id: int, status: str) -> None:
        """'delivered' or 'failed'; the answer text is dropped (the history keeps it)."""
        await self._finish_job(job_id, status)

    async def _finish_job(self, job_id: int, status: str, *, parts_sent: int | None = None) -> None:
        async with self._transaction():
            await self._finish_job_locked(job_id, status, parts_sent=parts_sent)

    async def _finish_job_locked(
        self, job_id: int, status: str, *, parts_sent: int | None = None
    ) -> None:
        await self._db.execute(
            "UPDATE jobs SET status = ?, answer = NULL, thought = NULL,"
            " parts_sent = COALESCE(?, parts_sent), updated_at = ? WHERE id = ?",
            (status, parts_sent, _now(), job_id),
        )

    async def get_unfinished_jobs(self) -> list[Job]:
        rows = await self._all(
            f"SELECT {_JOB_COLS} FROM jobs WHERE status IN {UNFINISHED} AND NOT held ORDER BY id"
        )
        return [_job(row) for row in rows]

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

    async def count_jobs_by_status(self) -> dict[str, int]:
        rows = await self._all("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {status: int(count) for status, count in rows}

    async def get_job(self, job_id: int) -> Job | None:
        row = await self._one(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    async def count_users(self) -> int:
        (count,) = await self._one("SELECT COUNT(*) FROM users")
        return int(count)
