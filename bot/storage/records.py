"""What the storage returns (frozen dataclasses) and how rows become them.

Explicit column lists keep queries valid when later migrations add columns. Timestamps are
stored as ISO 8601 text in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inference.types import DIET_CODES, MAX_DIET_NOTE_CHARS, MAX_DIET_NOTES, Diet

ROLES = ("user", "model")
USER_COLS = "user_id, language, think, created_at, updated_at"
MESSAGE_COLS = (
    "id, chat_id, user_id, role, text, image_file_id, created_at, image_file_ids, photo_from"
)
JOB_COLS = (
    "id, chat_id, message_id, user_id, chat_type, question, image_file_id, status,"
    " answer, thought, placeholder_id, attempts, parts_sent, answer_history_id, image_file_ids,"
    " quoted, photo_from"
)
PART_COLS = "chat_id, message_id, user_id, media_group_id, chat_type, file_id, file_size, caption"


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
    photo_from: int | None = None  # whose photo, when another group member's

    @property
    def owners(self) -> tuple[int, ...]:
        """Whose /forget erases it: its user, and the member whose photo it shows."""
        return owners(self.user_id, self.photo_from)


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
    held: list[Job] = field(default_factory=list)  # photos waiting for "Ask anyway"
    photos_asked_by_others: int = 0  # their photos in other group members' questions


@dataclass(frozen=True)
class ReferenceRates:
    """Units of each currency per euro, as the ECB published them on `date`."""

    per_euro: dict[str, float]
    date: str  # the ECB's date of the rates, YYYY-MM-DD
    fetched_at: datetime


@dataclass(frozen=True)
class Reply:
    """What a group member's question replies to, kept with its job: the text the replied
    message shows (another member's caption, the bot's answer), whose words they are,
    and whose photo it asks about when another member's (their /forget drops both)."""

    quoted: str | None = None
    quoted_from: int | None = None
    photo_from: int | None = None


NO_REPLY = Reply()  # a question in a private chat, or replying to nothing the bot reads


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
    quoted: str | None = None  # the text the question replies to, until it is answered
    photo_from: int | None = None  # whose photo it asks about, when another group member's

    @property
    def owners(self) -> tuple[int, ...]:
        """Whose /forget erases it: its user, and the member whose photo it asks about."""
        return owners(self.user_id, self.photo_from)


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


def owners(user_id: int, photo_from: int | None) -> tuple[int, ...]:
    return (user_id,) if photo_from is None else (user_id, photo_from)


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def user_from_row(row: Sequence[Any]) -> User:
    uid, language, think, created, updated = row
    return User(
        uid, language, bool(think), datetime.fromisoformat(created), datetime.fromisoformat(updated)
    )


def message_from_row(row: Sequence[Any]) -> StoredMessage:
    *fields, created, ids, photo_from = row
    created_at = datetime.fromisoformat(created)
    return StoredMessage(*fields, created_at, file_ids_of_row(fields[5], ids), photo_from)


def job_from_row(row: Sequence[Any]) -> Job:
    *fields, ids, quoted, photo_from = row
    return Job(*fields, file_ids_of_row(fields[6], ids), quoted, photo_from)


def file_ids_of_row(first: str | None, stored: str | None) -> tuple[str, ...]:
    """All photos of a row: the stored list (an album), else the one photo (older rows)."""
    if stored:
        return tuple(json.loads(stored))
    return (first,) if first else ()


def file_id_columns(file_ids: Sequence[str]) -> tuple[str | None, str | None]:
    """(image_file_id, image_file_ids) columns for a turn's photos."""
    first = file_ids[0] if file_ids else None
    return first, json.dumps(list(file_ids)) if len(file_ids) > 1 else None


def diet_from_json(value: str | None) -> Diet:
    """A stored diet, read defensively: codes this version does not know are dropped, and
    notes are bounded as when they were set."""
    try:
        stored = json.loads(value) if value else {}
        codes = [c for c in stored.get("codes", ()) if c in DIET_CODES]
        notes = [str(n)[:MAX_DIET_NOTE_CHARS] for n in stored.get("notes", ())]
    except (ValueError, AttributeError, TypeError):
        return Diet()
    return Diet(tuple(codes), tuple(notes[:MAX_DIET_NOTES]))


def diet_to_json(diet: Diet) -> str | None:
    """The stored form of a diet; an empty diet is stored as none (NULL)."""
    return json.dumps({"codes": diet.codes, "notes": diet.notes}) if diet else None
