"""Which group messages are meant for the bot, and the question without its mention, on
Telegram's own JSON shapes (entity offsets in UTF-16 code units)."""

from __future__ import annotations

from telegram import Message

from bot.addressing import (
    command_target,
    is_addressed,
    names_bot,
    replied_message,
    without_mention,
)

BOT_ID, BOT = 424242, "travel_test_bot"
OWN = frozenset({"start", "help"})
USER = {"id": 1, "is_bot": False, "first_name": "Ann"}
GROUP = {"id": -5, "type": "supergroup", "title": "Trip"}


def message(text: str | None = None, *, entities=(), caption=None, **fields) -> Message:
    data = {"message_id": 9, "date": 0, "chat": GROUP, "from": USER, **fields}
    if text is not None:
        data |= {"text": text, "entities": list(entities)}
    if caption is not None:
        data |= {"caption": caption, "caption_entities": list(entities)}
    return Message.de_json(data, None)


def mention(offset: int, length: int = len(BOT) + 1) -> dict:
    return {"type": "mention", "offset": offset, "length": length}


def addressed(msg: Message) -> bool:
    return is_addressed(msg, BOT_ID, BOT, OWN)


def test_a_mention_after_an_emoji_is_found_and_cut_by_utf16_offsets() -> None:
    text = "🍜🍜 @Travel_Test_Bot, is it spicy?"  # each emoji: 2 UTF-16 code units
    msg = message(text, entities=[mention(5)])
    assert addressed(msg)
    assert without_mention(msg, msg.text, BOT_ID, BOT) == "🍜🍜 is it spicy?"
    caption = message(caption=f"@{BOT}: what is this?", entities=[mention(0)], photo=[])
    assert addressed(caption)
    assert without_mention(caption, caption.caption, BOT_ID, BOT) == "what is this?"


def test_other_mentions_and_plain_text_are_not_for_the_bot() -> None:
    other = message("@travel_test_bot2 hi", entities=[mention(0, 17)])
    assert not addressed(other)
    assert without_mention(other, other.text, BOT_ID, BOT) == "@travel_test_bot2 hi"
    assert not addressed(message("travel_test_bot, hi"))  # no entity: Telegram saw no mention


def test_a_text_mention_of_the_bot_counts() -> None:
    entity = {"type": "text_mention", "offset": 0, "length": 10,
              "user": {"id": BOT_ID, "is_bot": True, "first_name": "Travel Bot"}}  # fmt: skip
    msg = message("Travel Bot what now", entities=[entity])
    assert addressed(msg)
    assert without_mention(msg, msg.text, BOT_ID, BOT) == "what now"


def test_commands_for_this_bot_or_its_own_bare_ones() -> None:
    def command(text: str) -> Message:
        length = len(text.split()[0])
        return message(text, entities=[{"type": "bot_command", "offset": 0, "length": length}])

    assert addressed(command("/help"))
    assert addressed(command("/roll@Travel_Test_Bot"))
    assert not addressed(command("/roll"))
    assert not addressed(command("/start@other_bot"))
    assert command_target(command("/start@other_bot x")) == ("start", "other_bot")
    assert command_target(message("hi /start")) is None
    assert names_bot(command("/roll@Travel_Test_Bot"), BOT)
    assert not names_bot(command("/help"), BOT) and not names_bot(command("/roll@x"), BOT)


def test_a_reply_to_the_bot_counts_but_a_forum_topics_root_is_no_reply() -> None:
    bot_message = {"message_id": 3, "date": 0, "chat": GROUP, "text": "an answer",
                   "from": {"id": BOT_ID, "is_bot": True, "first_name": "Travel Bot"}}  # fmt: skip
    assert addressed(message("and this?", reply_to_message=bot_message))
    in_topic = message("hello all", reply_to_message=bot_message, is_topic_message=True,
                       message_thread_id=3)  # fmt: skip
    assert replied_message(in_topic) is None and not addressed(in_topic)
