""" "Retake this photo" through the real client: a blurred, dark or tiny-text photo gets a
hint at once instead of the model's answer, and an "Ask anyway" button that only its sender
can use, once, within their limit of questions in flight, and not after /forget."""

from __future__ import annotations

import asyncio

import pytest
from PIL import ImageFilter

from bot.handlers.messages import MAX_HELD_PHOTOS
from tests.bot.test_photo_check import darkened, page
from tests.conftest import RunningBot, png_bytes, small_photo
from tests.e2e.botapi_server import SentMessage, TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after
from tests.e2e.test_groups import seen_requests
from tests.e2e.test_privacy import ANONYMOUS, forget, group

BLURRED = png_bytes(page(28, (1024, 768)).filter(ImageFilter.GaussianBlur(4)), "JPEG")
DARK = png_bytes(darkened(page(28, (1024, 768)), 0.1), "JPEG")
TINY_TEXT = png_bytes(page(10), "JPEG")


async def hint_after(bot: RunningBot, chat_id: int, mark: int) -> tuple[SentMessage, str]:
    """The bot's hint and its button's callback data."""
    call = await reply_after(bot, chat_id, mark)
    [[button]] = call.params["reply_markup"]["inline_keyboard"]
    message = next(
        m for m in bot.server.messages(chat_id) if m.message_id == call.result["message_id"]
    )
    return message, button["callback_data"]


async def press(bot: RunningBot, user: TgUser, message: SentMessage, data: str):
    mark = bot.server.mark()
    bot.server.press_button(user, message, data)
    return await bot.server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)


async def test_a_blurred_photo_gets_a_hint_and_runs_when_its_sender_asks(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann, eve = TgUser(id=9501, language_code="de"), TgUser(id=9502, language_code="fr")
    requests = seen_requests(bot)
    mark = server.mark()
    photo = server.send_photo(ann, BLURRED, caption="Was steht da?")
    hint, data = await hint_after(bot, ann.id, mark)
    assert hint.text == t.get("de", "photo_blurry")
    assert hint.reply_markup["inline_keyboard"][0][0]["text"] == t.get("de", "ask_anyway")
    await asyncio.sleep(0.3)
    assert requests == [] and await bot.storage.get_unfinished_jobs() == []
    assert [c.method for c in server.calls[mark:] if c.params.get("chat_id") == ann.id] == [
        "sendMessage"
    ]

    refused = await press(bot, eve, hint, data)
    assert refused.params["text"] == t.get("fr", "button_not_yours")
    await asyncio.sleep(0.3)
    assert requests == []

    mark = server.mark()
    accepted = await press(bot, ann, hint, data)
    assert "text" not in accepted.params
    placeholder = await reply_after(bot, ann.id, mark)
    assert placeholder.params["text"].startswith(t.get("de", "placeholder_photo"))
    assert placeholder.params["reply_parameters"]["message_id"] == photo["message_id"]
    await final_answer_after(bot, ann.id, mark)
    assert [r.question for r in requests] == ["Was steht da?"]
    assert server.messages(ann.id)[0].reply_markup is None  # the button is gone
    history = await bot.storage.get_history(ann.id, ann.id, max_turns=5)
    assert history[0].image_file_id == photo["photo"][-1]["file_id"]

    again = await press(bot, ann, hint, data)  # a second tap
    assert again.params["text"] == t.get("de", "button_expired")
    await asyncio.sleep(0.3)
    assert len(requests) == 1


async def test_a_dark_photo_erased_before_asking_runs_nothing(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9601, language_code="ja")
    requests = seen_requests(bot)
    mark = server.mark()
    server.send_photo(ann, DARK)
    hint, data = await hint_after(bot, ann.id, mark)
    assert hint.text == t.get("ja", "photo_too_dark")
    # kept until asked for, erased or aged out: /mydata says so
    mark = server.mark()
    server.send_photo(ann, DARK, caption="HELD-CAPTION-9601")
    await hint_after(bot, ann.id, mark)
    mark = server.mark()
    server.send_text(ann, "/mydata")
    shown = (await reply_after(bot, ann.id, mark)).params["text"]
    assert t.get("ja", "mydata_held", count=2) in shown
    assert f"{t.get('ja', 'photo_reference')} HELD-CAPTION-9601" in shown
    await forget(bot, ann, ann.id)
    expired = await press(bot, ann, hint, data)
    assert expired.params["text"] == t.get("ja", "button_expired")
    forged = await press(bot, ann, hint, "anyway:99999999999999999999999")
    assert forged.params["text"] == t.get("ja", "button_expired")
    await asyncio.sleep(0.3)
    data = await bot.storage.get_user_data(ann.id)
    assert requests == [] and data.user is None and data.messages == []


@pytest.mark.settings(max_requests_in_flight=1, max_new_tokens=300)
async def test_asking_anyway_counts_against_the_questions_in_flight(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9701, language_code="en")
    mark = server.mark()
    server.send_photo(ann, TINY_TEXT)
    hint, data = await hint_after(bot, ann.id, mark)
    assert hint.text == t.get("en", "photo_text_too_small")
    mark = server.mark()
    server.send_photo(ann, small_photo("EXIT"))  # the held photo leaves room for this one
    await server.wait_for(lambda c: c.method == "sendMessageDraft", after=mark, timeout=60)
    busy = await press(bot, ann, hint, data)
    assert busy.params["text"] == t.get("en", "too_many_requests", limit=1)
    assert busy.params["show_alert"] is True
    await final_answer_after(bot, ann.id, mark)
    mark = server.mark()
    accepted = await press(bot, ann, hint, data)  # now there is room
    assert "text" not in accepted.params
    await final_answer_after(bot, ann.id, mark)


async def test_an_anonymous_admins_held_photo_is_asked_for_by_an_admin(bot: RunningBot) -> None:
    """The photo is the group's (sent on its behalf): an admin of it may ask anyway, as
    they may press its /forget; a member may not."""
    server, t = bot.server, bot.services.texts
    chat, member, admin = -9800, TgUser(id=9801), TgUser(id=9802)
    server.admins[chat] = {admin.id}
    requests = seen_requests(bot)
    mark = server.mark()
    server.send_photo(ANONYMOUS, BLURRED, caption="@travel_test_bot what is it?", chat_id=chat,
                      chat_type="supergroup", sender_chat=group(chat))  # fmt: skip
    hint, data = await hint_after(bot, chat, mark)
    refused = await press(bot, member, hint, data)
    assert refused.params["text"] == t.get("en", "button_not_yours")
    mark = server.mark()
    accepted = await press(bot, admin, hint, data)
    assert "text" not in accepted.params
    await final_answer_after(bot, chat, mark)
    assert [r.question for r in requests] == ["what is it?"]
    assert (await bot.storage.get_history(chat, chat, max_turns=1))[0].text == "what is it?"


async def test_only_the_latest_held_photos_are_kept(bot: RunningBot) -> None:
    """Held photos do not count against the questions in flight: without a bound one user
    kept as many as they sent, each with its caption, for the whole retention time."""
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9901, language_code="en")
    hints = []
    for n in range(MAX_HELD_PHOTOS + 2):
        mark = server.mark()
        server.send_photo(ann, DARK, caption=f"dark {n}")
        hints.append(await hint_after(bot, ann.id, mark))
    held = (await bot.storage.get_user_data(ann.id)).held
    assert [job.question for job in held] == [f"dark {n}" for n in range(2, MAX_HELD_PHOTOS + 2)]
    expired = await press(bot, ann, *hints[0])
    assert expired.params["text"] == t.get("en", "button_expired")
    mark = server.mark()
    accepted = await press(bot, ann, *hints[-1])
    assert "text" not in accepted.params
    await final_answer_after(bot, ann.id, mark)
