"""Groups through the real client: the bot answers only what is meant for it, each member in
their own language, and a member may ask about the photo another member sent."""

from __future__ import annotations

import asyncio

import pytest

from bot.answering import prepare_image
from bot.logging import user_ref
from inference import Request
from inference.images import photo_key
from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import SentMessage, TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after

BOT = "@travel_test_bot"
GROUP = "supergroup"


def sent_to(bot: RunningBot, chat_id: int, mark: int) -> list[str]:
    """Methods the bot called for `chat_id` since `mark`."""
    return [c.method for c in bot.server.calls[mark:] if c.params.get("chat_id") == chat_id]


def seen_requests(bot: RunningBot) -> list[Request]:
    """Every request the bot submits from now on, as the worker gets it (the real worker
    still answers it)."""
    worker, seen = bot.services.worker, []
    submit = worker.submit

    def recording(request: Request):
        seen.append(request)
        return submit(request)

    worker.submit = recording
    return seen


def answer_to(bot: RunningBot, chat_id: int, message: dict) -> SentMessage:
    """The bot's visible answer replying to `message` (its placeholder is gone)."""
    calls = bot.server.calls_to("sendMessage", chat_id)
    ids = [
        c.result["message_id"]
        for c in calls
        if (c.params.get("reply_parameters") or {}).get("message_id") == message["message_id"]
    ]
    return next(m for m in bot.server.visible_messages(chat_id) if m.message_id in ids)


async def test_only_messages_meant_for_the_bot_are_answered(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    chat = -9100
    ann, bob = TgUser(id=9101, language_code="en"), TgUser(id=9102, language_code="en")
    mark = server.mark()
    server.send_service(ann, chat_id=chat, new_chat_members=[bob.to_dict()])
    server.send_service(ann, chat_id=chat, new_chat_title="Trip to Kyoto")
    photo = server.send_photo(ann, small_photo("EXIT"), chat_id=chat, chat_type=GROUP)
    server.send_service(ann, chat_id=chat, pinned_message=photo)
    server.send_text(bob, "nice photo", chat_id=chat, chat_type=GROUP, reply_to=photo)
    server.send_text(bob, "@someone_else look", chat_id=chat, chat_type=GROUP)
    server.send_text(bob, "/start@other_bot", chat_id=chat, chat_type=GROUP)
    server.send_text(bob, "/roll", chat_id=chat, chat_type=GROUP)  # another bot's, bare
    server.send_service(bob, chat_id=chat, left_chat_member=bob.to_dict())
    server.send_service(ann, chat_id=ann.id, chat_type="private", pinned_message=photo)
    server.send_text(bob, "/roll@travel_test_bot", chat_id=chat, chat_type=GROUP)
    told = await reply_after(bot, chat, mark)
    assert told.params["text"] == t.get("en", "unknown_command")
    await asyncio.sleep(0.5)
    assert sent_to(bot, chat, mark) == ["sendMessage"]
    assert sent_to(bot, ann.id, mark) == []
    assert await bot.storage.get_unfinished_jobs() == []
    assert await bot.storage.count_jobs_by_status() == {}

    # a bare command of its own, a mention alone, a mention with a question
    mark = server.mark()
    server.send_text(bob, "/help", chat_id=chat, chat_type=GROUP)
    helped = await reply_after(bot, chat, mark)
    assert helped.params["text"].startswith(t.get("en", "help", language="x", think="x")[:12])
    mark = server.mark()
    server.send_text(bob, f"{BOT}", chat_id=chat, chat_type=GROUP)
    how = await reply_after(bot, chat, mark)
    assert how.params["text"] == t.get("en", "group_how_to", bot=BOT)
    mark = server.mark()
    asked = server.send_photo(
        ann, small_photo("SORTIE"), caption=f"{BOT}, what does it say?", chat_id=chat,
        chat_type=GROUP,
    )  # fmt: skip
    await final_answer_after(bot, chat, mark)
    [question, _] = await bot.storage.get_history(chat, ann.id, max_turns=5)
    assert question.text == "what does it say?"
    assert question.image_file_id == asked["photo"][-1]["file_id"]


async def test_members_get_their_own_language_and_ask_about_each_others_photos(
    bot: RunningBot,
) -> None:
    server, t = bot.server, bot.services.texts
    chat = -9200
    ann = TgUser(id=9201, first_name="Ann", language_code="de")
    bob = TgUser(id=9202, first_name="Bob", language_code="ja", username="bob_jp")
    eve = TgUser(id=9203, first_name="Eve", language_code="fr")
    requests = seen_requests(bot)

    mark = server.mark()
    server.send_text(ann, "@travel_test_bot KEEP-ANN-9201 where is the station?",
                     chat_id=chat, chat_type=GROUP)  # fmt: skip
    await final_answer_after(bot, chat, mark)
    mark = server.mark()
    menu = small_photo("RAMEN 900")
    ann_photo = server.send_photo(ann, menu, caption=f"Was ist das? {BOT}", chat_id=chat,
                                  chat_type=GROUP)  # fmt: skip
    placeholder = await reply_after(bot, chat, mark)
    assert placeholder.params["text"].startswith(t.get("de", "placeholder_photo"))
    await final_answer_after(bot, chat, mark)
    answer = answer_to(bot, chat, ann_photo)

    # Bob replies to Ann's photo: he is answered in Japanese about her photo; of Ann's
    # words only the caption her photo shows in the group reaches his prompt
    mark = server.mark()
    bob_asks = server.send_text(bob, f"{BOT} 辛いですか？", chat_id=chat, chat_type=GROUP,
                                reply_to=ann_photo)  # fmt: skip
    placeholder = await reply_after(bot, chat, mark)
    assert placeholder.params["text"].startswith(t.get("ja", "placeholder_photo"))
    assert placeholder.params["reply_parameters"]["message_id"] == bob_asks["message_id"]
    await final_answer_after(bot, chat, mark)
    photo_id = ann_photo["photo"][-1]["file_id"]
    assert [c.params["file_id"] for c in server.calls[mark:] if c.method == "getFile"] == [photo_id]
    request = requests[-1]
    assert request.language == "ja" and request.question == "辛いですか？"
    assert request.quoted == "Was ist das?"
    assert request.images == (await prepare_image(bot.services, menu),)
    assert request.history == ()  # Bob's own history in this group: none yet
    assert "KEEP-ANN" not in repr(request)
    [bob_question, _] = await bot.storage.get_history(chat, bob.id, max_turns=5)
    assert (bob_question.text, bob_question.image_file_id) == ("辛いですか？", photo_id)

    # Eve replies to the bot's answer to Ann, without a mention: that answer is what her
    # reply shows, and the photo it is about is asked about, in French
    mark = server.mark()
    server.send_text(eve, "Et en dessert ?", chat_id=chat, chat_type=GROUP, reply_to=answer)
    placeholder = await reply_after(bot, chat, mark)
    assert placeholder.params["text"].startswith(t.get("fr", "placeholder_photo"))
    await final_answer_after(bot, chat, mark)
    request = requests[-1]
    assert request.language == "fr" and request.question == "Et en dessert ?"
    rendered = server._rendered[(chat, answer.message_id)]  # as the group saw the answer
    assert request.quoted == rendered["text"]
    assert request.images == (await prepare_image(bot.services, menu),)
    assert "KEEP-ANN" not in repr(request) and "辛い" not in repr(request)
    assert [m.role for m in await bot.storage.get_history(chat, ann.id, max_turns=9)] == [
        "user", "model", "user", "model"
    ]  # fmt: skip

    # Eve's next follow-up (a reply to the bot) is about that photo too, from her history
    mark = server.mark()
    eve_answer = next(
        m
        for m in reversed(server.visible_messages(chat))
        if m.text and m.message_id > answer.message_id
    )
    server.send_text(eve, "Merci, et le prix ?", chat_id=chat, chat_type=GROUP, reply_to=eve_answer)
    await final_answer_after(bot, chat, mark)
    assert requests[-1].images == (await prepare_image(bot.services, menu),)


async def test_a_reply_to_an_answer_about_an_erased_photo_has_no_photo(bot: RunningBot) -> None:
    from tests.e2e.test_privacy import forget

    server = bot.server
    chat = -9300
    ann, bob = TgUser(id=9301, language_code="en"), TgUser(id=9302, language_code="en")
    requests = seen_requests(bot)
    mark = server.mark()
    photo = server.send_photo(ann, small_photo("MENU"), caption=BOT, chat_id=chat,
                              chat_type=GROUP)  # fmt: skip
    await final_answer_after(bot, chat, mark)
    answer = answer_to(bot, chat, photo)
    await forget(bot, ann, chat)
    mark = server.mark()
    server.send_text(bob, "and this?", chat_id=chat, chat_type=GROUP, reply_to=answer)
    await final_answer_after(bot, chat, mark)
    assert [c for c in server.calls[mark:] if c.method == "getFile"] == []
    assert requests[-1].images == () and requests[-1].quoted is None


@pytest.mark.settings(allowed_user_ids={9401})
async def test_a_stranger_in_the_group_is_refused_only_when_addressing_the_bot(
    bot: RunningBot,
) -> None:
    server, t = bot.server, bot.services.texts
    chat = -9400
    friend, stranger = TgUser(id=9401), TgUser(id=9402, language_code="es")
    mark = server.mark()
    server.send_service(friend, chat_id=chat, new_chat_members=[stranger.to_dict()])
    for text in ("hola a todos", "/start@other_bot", "/roll"):
        server.send_text(stranger, text, chat_id=chat, chat_type=GROUP)
    server.send_photo(stranger, small_photo("SALIDA"), chat_id=chat, chat_type=GROUP)
    await asyncio.sleep(0.5)
    server.send_text(stranger, f"{BOT} ¿qué dice?", chat_id=chat, chat_type=GROUP)
    refused = await reply_after(bot, chat, mark)
    assert refused.params["text"] == t.get("es", "not_allowed")
    await asyncio.sleep(0.5)
    assert sent_to(bot, chat, mark) == ["sendMessage"]
    assert await bot.storage.get_user(stranger.id) is None
    mark = server.mark()
    server.send_photo(friend, small_photo("EXIT"), caption=BOT, chat_id=chat, chat_type=GROUP)
    await final_answer_after(bot, chat, mark)


async def test_a_members_language_keyboard_is_theirs_alone(bot: RunningBot) -> None:
    """Bob's tap on Ann's /lang keyboard changed Bob's language and took Ann's keyboard."""
    server, t = bot.server, bot.services.texts
    chat = -9600
    ann, bob = TgUser(id=9601, language_code="en"), TgUser(id=9602, language_code="en")
    mark = server.mark()
    server.send_text(ann, "/lang", chat_id=chat, chat_type=GROUP)
    shown = await reply_after(bot, chat, mark)
    [french] = [
        b["callback_data"]
        for row in shown.params["reply_markup"]["inline_keyboard"]
        for b in row
        if b["text"] == "Français"
    ]
    keyboard = next(m for m in server.messages(chat) if m.message_id == shown.result["message_id"])
    mark = server.mark()
    server.press_button(bob, keyboard, french)
    refused = await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
    assert refused.params["text"] == t.get("en", "button_not_yours")
    await asyncio.sleep(0.3)
    assert sent_to(bot, chat, mark) == [] and await bot.storage.get_user(bob.id) is None
    mark = server.mark()
    server.press_button(ann, keyboard, french)
    edited = await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    assert edited.params["text"] == t.get("fr", "lang_set", language="Français")
    assert (await bot.storage.get_user(ann.id)).language == "fr"


async def test_a_members_forget_takes_their_photo_from_others_questions(bot: RunningBot) -> None:
    """Bob asks about the photo Ann sent to the group (not to the bot); once Ann says
    /forget, Bob's history and the bot's answer to him lead to her photo no more: his
    follow-up, and Eve's reply to that answer, are asked without it."""
    from tests.e2e.test_privacy import files_holding, forget

    server, t = bot.server, bot.services.texts
    chat = -9500
    ann, bob = TgUser(id=9501), TgUser(id=9502, first_name="Bob")
    eve = TgUser(id=9503, first_name="Eve")
    requests = seen_requests(bot)
    ann_photo = server.send_photo(ann, small_photo("MENU-9501"), chat_id=chat, chat_type=GROUP)
    photo_id = ann_photo["photo"][-1]["file_id"]
    mark = server.mark()
    bob_asks = server.send_text(bob, f"{BOT} which has no pork?", chat_id=chat, chat_type=GROUP,
                                reply_to=ann_photo)  # fmt: skip
    await final_answer_after(bot, chat, mark)
    assert len(requests[-1].images) == 1
    answer = answer_to(bot, chat, bob_asks)
    [turn, _] = await bot.storage.get_history(chat, bob.id, max_turns=5)
    assert turn.image_file_ids == (photo_id,)
    mark = server.mark()
    server.send_text(ann, "/mydata", chat_id=ann.id)  # she never spoke to the bot
    shown = await reply_after(bot, ann.id, mark)
    assert t.get("en", "mydata_photos_asked_by_others", count=1) in shown.params["text"]

    await forget(bot, ann, ann.id)

    [turn, _] = await bot.storage.get_history(chat, bob.id, max_turns=5)
    assert (turn.text, turn.image_file_ids) == ("which has no pork?", ())
    assert files_holding(bot.services.settings.database_path.parent, photo_id) == []
    for member, text, replied in ((bob, "and the price?", None), (eve, "dessert?", answer)):
        mark = server.mark()
        server.send_text(member, f"{BOT} {text}" if replied is None else text, chat_id=chat,
                         chat_type=GROUP, reply_to=replied)  # fmt: skip
        await final_answer_after(bot, chat, mark)
        assert [c for c in server.calls[mark:] if c.method == "getFile"] == []
        assert requests[-1].images == () and requests[-1].question == text


@pytest.mark.settings(max_new_tokens=4000, max_seq_len=4096)
async def test_a_members_forget_stops_an_answer_about_their_photo(bot: RunningBot) -> None:
    """Ann says /forget while Bob's answer about her photo is being written: it stops at
    once, the engine keeps nothing of her photo, nothing of the turn is stored, and Bob is
    told why his answer stopped."""
    from tests.e2e.test_privacy import forget

    server, t = bot.server, bot.services.texts
    chat = -9600
    ann, bob = TgUser(id=9601), TgUser(id=9602, first_name="Bob")
    photo = small_photo("MENU-9601")
    ann_photo = server.send_photo(ann, photo, chat_id=chat, chat_type=GROUP)
    mark = server.mark()
    bob_asks = server.send_text(bob, f"{BOT} spicy?", chat_id=chat, chat_type=GROUP,
                                reply_to=ann_photo)  # fmt: skip
    placeholder = await reply_after(bot, chat, mark)
    await server.wait_for(lambda c: c.method == "editMessageText", after=mark, timeout=60)
    worker = bot.services.worker
    assert worker.num_running == 1  # the answer is being written
    kept = worker._engine.runner.photos  # looked into: the engine's photo cache
    key = photo_key(await prepare_image(bot.services, photo), worker._engine.base.image_soft_tokens)
    assert kept.owners(key) == {user_ref(bob.id), user_ref(ann.id)}

    mark = server.mark()
    await forget(bot, ann, ann.id)

    told = await reply_after(bot, chat, mark)
    assert told.params["text"] == t.get("en", "photo_withdrawn")
    assert told.params["reply_parameters"]["message_id"] == bob_asks["message_id"]
    erased = t.get("en", "forget_done", count=0)[:10]
    await server.wait_for(
        lambda c: c.method == "editMessageText" and c.params.get("text", "").startswith(erased),
        after=mark,
    )  # the erasure's end: the engine has let go of it (it would write 4,000 tokens)
    assert worker.num_running == 0
    assert kept.get(key) is None
    deleted = [c.params["message_id"] for c in server.calls_to("deleteMessage", chat)]
    assert placeholder.result["message_id"] in deleted
    assert await bot.storage.get_history(chat, bob.id, max_turns=5) == []
    assert await bot.storage.get_unfinished_jobs() == []


async def test_a_question_about_a_photo_waiting_its_turn_is_dropped_on_its_senders_forget(
    bot: RunningBot,
) -> None:
    """Bob's question about Ann's photo waits behind his answer being written (held here
    through the bot's own per-user lock); Ann says /forget meanwhile: it never reaches the
    model, and Bob is told why."""
    from tests.e2e.test_privacy import forget

    server, t = bot.server, bot.services.texts
    chat = -9800
    ann, bob = TgUser(id=9801), TgUser(id=9802, first_name="Bob")
    requests = seen_requests(bot)
    ann_photo = server.send_photo(ann, small_photo("MENU-9801"), chat_id=chat, chat_type=GROUP)
    async with bot.services.user_locks.hold(bob.id):
        mark = server.mark()
        bob_asks = server.send_text(bob, f"{BOT} spicy?", chat_id=chat, chat_type=GROUP,
                                    reply_to=ann_photo)  # fmt: skip
        # accepted, its photo being fetched; it then waits for the lock, whenever Ann's
        # /forget comes
        await server.wait_for(lambda c: c.method == "getFile", after=mark)
        await forget(bot, ann, ann.id)
    told = await reply_after(bot, chat, mark)
    assert told.params["text"] == t.get("en", "photo_withdrawn")
    assert told.params["reply_parameters"]["message_id"] == bob_asks["message_id"]
    assert requests == []
    assert await bot.storage.get_history(chat, bob.id, max_turns=5) == []
