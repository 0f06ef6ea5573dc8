"""A traveller's whole conversation, played through the real PTB client against the local
Bot API server, with the tiny Gemma 4 model answering on CPU."""

from __future__ import annotations

import sqlite3

from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import ApiCall, SentMessage, TgUser


def texts(bot: RunningBot):
    return bot.services.texts


async def reply_after(bot: RunningBot, chat_id: int, mark: int, *, timeout: float = 30) -> ApiCall:
    return await bot.server.wait_for(
        lambda c: c.method == "sendMessage" and c.params.get("chat_id") == chat_id,
        after=mark,
        timeout=timeout,
    )


async def final_answer_after(bot: RunningBot, chat_id: int, mark: int) -> ApiCall:
    """The final answer: a sendMessage replying to the user's message, after the placeholder."""
    placeholder = await reply_after(bot, chat_id, mark)
    return await bot.server.wait_for(
        lambda c: (
            c.method == "deleteMessage"
            and c.params.get("message_id") == placeholder.result["message_id"]
        ),
        after=mark,
        timeout=60,
    )


async def test_full_conversation(bot: RunningBot, sign_png: bytes) -> None:
    server, t = bot.server, texts(bot)
    ann = TgUser(id=5001, first_name="Ann", language_code="en")

    # /start greets in the Telegram language and explains what to send
    mark = server.mark()
    server.send_text(ann, "/start")
    greeting = await reply_after(bot, ann.id, mark)
    assert greeting.params["text"] == t.get("en", "start", name="Ann", language="English")

    # /lang de switches UI and answer language
    mark = server.mark()
    server.send_text(ann, "/lang de")
    switched = await reply_after(bot, ann.id, mark)
    assert switched.params["text"] == t.get("de", "lang_set", language="Deutsch")
    assert (await bot.storage.get_user(ann.id)).language == "de"

    # a photo with a caption: placeholder, typing, streamed drafts, final answer
    mark = server.mark()
    photo = server.send_photo(ann, sign_png, caption="Was bedeutet das?")
    placeholder = await reply_after(bot, ann.id, mark)
    assert placeholder.params["text"].startswith(t.get("de", "placeholder_photo"))
    await final_answer_after(bot, ann.id, mark)
    calls = server.calls[mark:]
    methods = [c.method for c in calls]
    assert "sendChatAction" in methods
    drafts = [c for c in calls if c.method == "sendMessageDraft"]
    assert drafts, "the answer should stream into a draft in a private chat"
    assert all(d.params["draft_id"] == placeholder.result["message_id"] for d in drafts)
    answers = [c for c in calls if c.method == "sendMessage" and c is not placeholder]
    assert answers and answers[0].params["reply_parameters"]["message_id"] == photo["message_id"]
    visible = server.visible_messages(ann.id)
    assert placeholder.result["message_id"] not in {m.message_id for m in visible}
    history = await bot.storage.get_history(ann.id, ann.id, max_turns=10)
    assert [m.role for m in history] == ["user", "model"]
    assert history[0].text == "Was bedeutet das?"
    assert history[0].image_file_id == photo["photo"][-1]["file_id"]

    # a follow-up text is answered with the history, the photo fetched again
    mark = server.mark()
    server.send_text(ann, "Und wo ist der Ausgang?")
    await final_answer_after(bot, ann.id, mark)
    assert any(c.method == "getFile" for c in server.calls[mark:])
    history = await bot.storage.get_history(ann.id, ann.id, max_turns=10)
    assert [m.role for m in history] == ["user", "model", "user", "model"]
    assert history[2].text == "Und wo ist der Ausgang?"

    # /think turns thinking on; the next photo shows the thinking placeholder
    mark = server.mark()
    server.send_text(ann, "/think")
    toggled = await reply_after(bot, ann.id, mark)
    assert toggled.params["text"] == t.get("de", "think_now_on")
    assert (await bot.storage.get_user(ann.id)).think is True
    mark = server.mark()
    server.send_photo(ann, small_photo("SORTIE"))
    placeholder = await reply_after(bot, ann.id, mark)
    assert placeholder.params["text"].startswith(t.get("de", "placeholder_thinking"))
    await final_answer_after(bot, ann.id, mark)

    # /mydata shows what is kept
    mark = server.mark()
    server.send_text(ann, "/mydata")
    shown = await reply_after(bot, ann.id, mark)
    assert "Deutsch" in shown.params["text"]
    assert "Und wo ist der Ausgang?" in shown.params["text"]

    # /forget asks first, then erases everything about Ann
    mark = server.mark()
    server.send_text(ann, "/forget")
    confirm = await reply_after(bot, ann.id, mark)
    assert confirm.params["text"] == t.get("de", "forget_confirm")
    message = _message(server.messages(ann.id), confirm.result["message_id"])
    mark = server.mark()
    server.press_button(ann, message, "forget:yes")
    await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
    done = await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    # the user row, 6 history messages and 3 delivered jobs
    assert done.params["text"] == t.get("de", "forget_done", count=10)
    assert await bot.storage.get_user(ann.id) is None
    assert await bot.storage.get_history(ann.id, ann.id, max_turns=10) == []
    with sqlite3.connect(bot.services.settings.database_path) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            if "user_id" in columns:
                rows = db.execute(f"SELECT COUNT(*) FROM {table} WHERE user_id=?", (ann.id,))
                assert rows.fetchone()[0] == 0, table


async def test_lang_keyboard_and_help(bot: RunningBot) -> None:
    server, t = bot.server, texts(bot)
    kai = TgUser(id=5002, first_name="Kai", language_code="ja")
    mark = server.mark()
    server.send_text(kai, "/lang")
    shown = await reply_after(bot, kai.id, mark)
    assert shown.params["text"] == t.get("ja", "lang_current", language="日本語")
    buttons = [b for row in shown.params["reply_markup"]["inline_keyboard"] for b in row]
    assert {b["callback_data"] for b in buttons} == {
        f"lang:{code}:{kai.id}" for code in t.languages
    }
    message = _message(server.messages(kai.id), shown.result["message_id"])
    mark = server.mark()
    server.press_button(kai, message, f"lang:fr:{kai.id}")
    edited = await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    assert edited.params["text"] == t.get("fr", "lang_set", language="Français")
    mark = server.mark()
    server.send_text(kai, "/help")
    helped = await reply_after(bot, kai.id, mark)
    for command in ("/lang", "/think", "/mydata", "/forget", "/help"):
        assert command in helped.params["text"]
    assert "Français" in helped.params["text"]


def _message(messages: list[SentMessage], message_id: int) -> SentMessage:
    return next(m for m in messages if m.message_id == message_id)
