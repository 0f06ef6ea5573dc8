"""Which messages are meant for the bot, and the question without the mention of it.

In a private chat every message is. In a group or supergroup only one that mentions the bot
(`@username`, or a text_mention of it, in the text or the caption), replies to one of its
messages, or starts with a command for it: `/cmd@thisbot`, or a bare `/cmd` that is one of
the bot's own commands (Telegram sends bare commands to a bot in privacy mode only when it
was the last bot to speak there, and a group member's menu tap names the bot once several
bots are in the group). A bare command the bot does not have is another bot's: silence.
Service messages (joins, leaves, pins, title changes ...) are never meant for it.
"""

from __future__ import annotations

import re

from telegram import Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.ext import filters

GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)
_SPACES = re.compile(r"[ \t]{2,}")


def is_service_message(update: Update) -> bool:
    return filters.StatusUpdate.ALL.check_update(update)


def is_group(message: Message) -> bool:
    return message.chat.type in GROUP_TYPES


def is_addressed(message: Message, bot_id: int, username: str, commands: frozenset[str]) -> bool:
    """True when a message in a group is meant for the bot (the module docstring)."""
    if _mentions(message, bot_id, username) or _replied_bot_message(message, bot_id):
        return True
    command = command_target(message)
    if command is None:
        return False
    name, target = command
    return names_bot(message, username) if target else name.lower() in commands


def names_bot(message: Message, username: str) -> bool:
    """Starts with a command naming this bot (`/cmd@thisbot`): in a group the one sure sign
    that a command the bot does not have is meant for it."""
    command = command_target(message)
    return command is not None and bool(username) and command[1].lower() == username.lower()


def command_target(message: Message) -> tuple[str, str] | None:
    """`("start", "thisbot")` for `/start@thisbot ...`, `("start", "")` for `/start`; None
    when the message does not start with a command."""
    text = message.text or ""
    entities = message.entities or ()
    if not any(e.type == MessageEntity.BOT_COMMAND and e.offset == 0 for e in entities):
        return None
    name, _, target = text.split(maxsplit=1)[0][1:].partition("@")
    return name, target


def sender_id(message: Message) -> int | None:
    """Whom the bot keeps data about for a message. One sent on behalf of a chat (an
    anonymous group admin speaks as the group, a linked channel as the channel) belongs to
    that chat: their user ids (GroupAnonymousBot, Telegram) are shared by strangers."""
    if message.sender_chat is not None:
        return message.sender_chat.id
    return message.from_user.id if message.from_user else None


def replied_message(message: Message) -> Message | None:
    """The message this one replies to. In a forum topic Telegram sets reply_to_message to
    the topic's first (service) message for every message in it: that is no reply."""
    reply = message.reply_to_message
    if reply is None:
        return None
    if message.is_topic_message and reply.message_id == message.message_thread_id:
        return None
    return reply


def without_mention(message: Message, text: str | None, bot_id: int, username: str) -> str:
    """`text` (the message's text or caption) without the mentions of the bot, trimmed."""
    if not text:
        return ""
    entities = message.entities if message.text is not None else message.caption_entities
    spans = [
        (e.offset, e.offset + e.length)
        for e in entities or ()
        if _is_bot_mention(e, text, bot_id, username)
    ]
    units = text.encode("utf-16-le")  # entity offsets count UTF-16 code units
    kept, start = [], 0
    for begin, end in sorted(spans):
        kept.append(units[start * 2 : begin * 2].decode("utf-16-le"))
        start = end
    kept.append(units[start * 2 :].decode("utf-16-le"))
    # "@bot, what is this?" -> "what is this?": the punctuation after a mention goes with it
    remaining = kept[0] + "".join(part.lstrip(",:;") for part in kept[1:])
    return _SPACES.sub(" ", remaining).strip()


def _mentions(message: Message, bot_id: int, username: str) -> bool:
    for text, entities in (
        (message.text, message.entities),
        (message.caption, message.caption_entities),
    ):
        if text and any(_is_bot_mention(e, text, bot_id, username) for e in entities or ()):
            return True
    return False


def _is_bot_mention(entity: MessageEntity, text: str, bot_id: int, username: str) -> bool:
    if entity.type == MessageEntity.TEXT_MENTION:
        return entity.user is not None and entity.user.id == bot_id
    if entity.type != MessageEntity.MENTION:
        return False
    units = text.encode("utf-16-le")[entity.offset * 2 : (entity.offset + entity.length) * 2]
    return units.decode("utf-16-le", errors="replace").lower() == f"@{username.lower()}"


def _replied_bot_message(message: Message, bot_id: int) -> bool:
    reply = replied_message(message)
    return reply is not None and reply.from_user is not None and reply.from_user.id == bot_id
