"""The database file and its schema: created readable by the bot's user alone, opened in
WAL mode, brought up to date by MIGRATIONS (PRAGMA user_version counts those applied)."""

from __future__ import annotations

import os
from pathlib import Path

import aiosqlite

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

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
    [
        # What a group member's question replies to (another member's caption, or the bot's
        # answer as the group saw it): a job recovered after a restart is asked with it.
        # Dropped once the job is answered or has failed; gone with the job (/forget).
        "ALTER TABLE jobs ADD COLUMN quoted TEXT",
    ],
    [
        # Whose words `quoted` are (the caption's sender, or whom the quoted answer was
        # for): their /forget drops them from others' jobs too
        "ALTER TABLE jobs ADD COLUMN quoted_from INTEGER",
    ],
    [
        # Whose photo a group member asked about, when another member's (a reply to their
        # photo, or to the bot's answer about it; for a follow-up, the history's photo it
        # sees): their /forget drops the photo from the asker's job and history too
        "ALTER TABLE jobs ADD COLUMN photo_from INTEGER",
        "ALTER TABLE messages ADD COLUMN photo_from INTEGER",
        "CREATE INDEX jobs_photo_from ON jobs (photo_from) WHERE photo_from IS NOT NULL",
        "CREATE INDEX messages_photo_from ON messages (photo_from) WHERE photo_from IS NOT NULL",
    ],
    [
        # The translation drawn on a photo is linked to its answer's job (answer_messages)
        # through the answer's history row
        "CREATE INDEX jobs_answer_history_id ON jobs (answer_history_id)"
        " WHERE answer_history_id IS NOT NULL",
    ],
]


def create_private(path: Path) -> None:
    """The database files readable by the bot's user alone, however it was started (SQLite
    creates the -wal and -shm files with the database file's mode)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists():
            file.chmod(PRIVATE_FILE_MODE)


async def connect(path: Path, *, busy_timeout_s: float) -> aiosqlite.Connection:
    """Open (creating if needed) the private database file, in autocommit mode: every write
    runs in an explicit transaction (Database._transaction)."""
    create_private(path)
    db = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            await db.execute(f"PRAGMA {pragma}")
        await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        await db.execute("PRAGMA secure_delete=ON")  # erased data is overwritten
    except BaseException:
        await db.close()
        raise
    return db
