"""A burst far beyond capacity: every user gets an answer or a clear, localized "busy"
message; nobody is left without a reply, and one user cannot flood the bot."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from bot.update_budget import BURST
from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import TgUser

NUM_USERS = 200
LANGUAGES = ["en", "de", "fr", "es", "it", "pt", "ru", "uk", "ja", "zh", "ko", "ar"]


@pytest.mark.settings(max_queue=8, max_batch_size=4, max_new_tokens=6)
async def test_200_users_at_once_each_get_an_answer_or_a_busy_message(bot: RunningBot) -> None:
    server, texts = bot.server, bot.services.texts
    users = [
        TgUser(id=20_000 + i, language_code=LANGUAGES[i % len(LANGUAGES)]) for i in range(NUM_USERS)
    ]
    photo = small_photo("MENU")
    mark = server.mark()
    for user in users:
        server.send_photo(user, photo)

    def outcome(user: TgUser) -> str | None:
        calls = [c for c in server.calls[mark:] if c.params.get("chat_id") == user.id]
        if any(
            c.method == "editMessageText" and is_busy(texts, user.language_code, c.params["text"])
            for c in calls
        ):
            return "busy"
        if any(c.method == "deleteMessage" for c in calls):  # placeholder replaced by answer
            return "answered"
        return None

    for _ in range(1200):
        outcomes = [outcome(user) for user in users]
        if all(outcomes):
            break
        await asyncio.sleep(0.1)
    missing = [user.id for user, result in zip(users, outcomes, strict=True) if result is None]
    assert not missing, f"{len(missing)} users got no reply"
    answered = outcomes.count("answered")
    assert answered >= 8  # at least a full queue was served
    assert outcomes.count("busy") > 0
    histories = [await bot.storage.get_history(u.id, u.id, max_turns=2) for u in users]
    assert sum(1 for h in histories if h) == answered  # only answered turns are stored
    assert await bot.storage.get_unfinished_jobs() == []


def filled_in(texts, language: str, key: str, text: str) -> bool:
    """`text` is the string `key` with some number of seconds filled in (in the plural form
    that number takes)."""
    numbers = re.findall(r"\d+", text)
    return len(numbers) == 1 and text == texts.get(language, key, seconds=int(numbers[0]))


def is_busy(texts, language: str, text: str) -> bool:
    return text == texts.get(language, "error_busy") or filled_in(
        texts, language, "error_busy_eta", text
    )


@pytest.mark.settings(max_queue=1, max_batch_size=1, max_new_tokens=8)
async def test_busy_message_estimates_the_wait(bot: RunningBot) -> None:
    server, texts = bot.server, bot.services.texts
    first = TgUser(id=21_000, language_code="de")
    mark = server.mark()
    server.send_photo(first, small_photo("EXIT"))  # one answer gives the typical latency
    await server.wait_for(lambda c: c.method == "deleteMessage", after=mark, timeout=60)
    users = [TgUser(id=21_001 + i, language_code="es") for i in range(3)]
    mark = server.mark()
    for user in users:
        server.send_photo(user, small_photo(f"MENU {user.id}"))
    busy = await server.wait_for(
        lambda c: (
            c.method == "editMessageText"
            and filled_in(texts, "es", "error_busy_eta", c.params["text"])
        ),
        after=mark,
        timeout=60,
    )
    seconds = int("".join(ch for ch in busy.params["text"] if ch.isdigit()))
    assert seconds >= 10 and seconds % 10 == 0


@pytest.mark.settings(max_requests_in_flight=2, max_new_tokens=200)
async def test_one_user_cannot_flood(bot: RunningBot) -> None:
    server, texts = bot.server, bot.services.texts
    user = TgUser(id=30_001, language_code="pl")
    mark = server.mark()
    for i in range(5):
        server.send_text(user, f"question {i}")
    refusal = texts.get("pl", "too_many_requests", limit=2)
    await server.wait_for(lambda c: c.params.get("text") == refusal, after=mark, timeout=30)
    for _ in range(300):  # the accepted ones are still answered
        if len(await bot.storage.get_history(user.id, user.id, max_turns=10)) >= 4:
            break
        await asyncio.sleep(0.1)
    history = await bot.storage.get_history(user.id, user.id, max_turns=10)
    assert 2 <= len(history) // 2 < 5
    refusals = [c for c in server.calls[mark:] if c.params.get("text") == refusal]
    assert len(refusals) + len(history) // 2 == 5  # every message: an answer or a refusal
    other = TgUser(id=30_002, language_code="en")
    mark = server.mark()
    server.send_text(other, "hello?")
    await server.wait_for(
        lambda c: c.method == "deleteMessage" and c.params["chat_id"] == other.id,
        after=mark,
        timeout=60,
    )


async def test_a_flood_is_cut_and_its_sender_told_once(bot: RunningBot) -> None:
    """Beyond the burst (bot/update_budget.py) updates are skipped before any work: the
    sender is told once (in their language), not once per skipped message."""
    server, texts = bot.server, bot.services.texts
    user = TgUser(id=30_050, language_code="de")
    mark = server.mark()
    for _ in range(BURST + 20):
        server.send_text(user, "/help")
    too_fast = texts.get("de", "too_fast")
    await server.wait_for(lambda c: c.params.get("text") == too_fast, after=mark, timeout=30)
    await asyncio.sleep(1.0)
    sent = [c.params["text"] for c in server.calls_to("sendMessage", user.id)]
    assert sent.count(too_fast) == 1
    assert BURST <= len(sent) - 1 < BURST + 20  # the burst, and what the rate let in since


@pytest.mark.settings(telegram_messages_per_second=30)
async def test_a_flood_of_button_presses_does_not_hold_up_others(bot: RunningBot) -> None:
    """Each /diet press edits a message, and all the bot's messages share Telegram's 30 a
    second: 1,000 presses of one user filled every handler slot with an edit waiting its
    turn, and everyone else waited behind them (over 30 s)."""
    server = bot.server
    eve, ann = TgUser(id=30_101, language_code="en"), TgUser(id=30_102, language_code="en")
    mark = server.mark()
    server.send_text(eve, "/diet")
    keyboard = await server.wait_for_message(eve.id, lambda m: m.reply_markup is not None)
    for _ in range(1000):
        server.press_button(eve, keyboard, "diet:vegan")
    await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    mark, started = server.mark(), time.monotonic()
    server.send_text(ann, "/help")
    await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == ann.id,
        after=mark,
        timeout=30,
    )
    assert time.monotonic() - started < 10  # the flood itself is read: 1,000 updates


@pytest.mark.settings(telegram_messages_per_minute_per_group=20)
async def test_forged_buttons_naming_a_group_leave_its_messages_alone(bot: RunningBot) -> None:
    """A press for a group's data asks Telegram whether the presser is its admin
    (getChatMember). Counted among the group's 20 messages a minute, two members' 30 forged
    presses made the next answer there wait half a minute."""
    server, t = bot.server, bot.services.texts
    chat, ann = -30_200, TgUser(id=30_201, language_code="en")
    for attacker in (TgUser(id=30_202), TgUser(id=30_203)):
        mark = server.mark()
        server.send_text(attacker, "/help")
        await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
        [message] = server.messages(attacker.id)
        for _ in range(15):
            server.press_button(attacker, message, f"forget:no:{chat}")
    await asyncio.sleep(1)  # the presses are answered: "not yours"
    mark, started = server.mark(), time.monotonic()
    server.send_text(ann, "/help", chat_id=chat, chat_type="supergroup")
    told = await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == chat, after=mark, timeout=60
    )
    assert told.params["text"].startswith(t.get("en", "help", language="English", think="x")[:20])
    assert time.monotonic() - started < 3
