"""Per-user settings and conversation history in SQLite (aiosqlite, stdlib only).

Who and where: `user_id` is whom the bot keeps data about (a Telegram user, or the chat an
anonymous group admin or a channel speaks as); `chat_id` is where it was said. History is
kept per (chat_id, user_id): nothing said in one chat is read back in another.

schema.py makes the file and its tables; records.py the dataclasses rows are read into;
database.py the connection's lock and transactions; one module per group of tables holds
their methods, all of which one `Storage` (store.py) offers.
"""

from bot.storage.erasure import ERASED_MESSAGES_KEPT
from bot.storage.jobs import UNFINISHED, TooManyJobs
from bot.storage.records import (
    NO_REPLY,
    ROLES,
    AlbumPart,
    CurrencyChoice,
    Job,
    ReferenceRates,
    Reply,
    StoredMessage,
    User,
    UserData,
)
from bot.storage.schema import MIGRATIONS, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from bot.storage.store import Storage

__all__ = [
    "ERASED_MESSAGES_KEPT",
    "MIGRATIONS",
    "NO_REPLY",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "ROLES",
    "UNFINISHED",
    "AlbumPart",
    "CurrencyChoice",
    "Job",
    "ReferenceRates",
    "Reply",
    "Storage",
    "StoredMessage",
    "TooManyJobs",
    "User",
    "UserData",
]
