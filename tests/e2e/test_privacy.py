"""Privacy through the real client: nothing said in one chat reaches another, and what
/forget says is true at every instant (a running answer, a photo being downloaded)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.answering import prepare_image
from bot.logging import user_ref
from inference.images import photo_key
from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import ANONYMOUS_ADMIN_ID, ApiCall, BotApiServer, TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after

ANONYMOUS = TgUser(id=ANONYMOUS_ADMIN_ID, first_name="Group", username="GroupAnonymousBot")


def group(chat_id: int) -> dict:
    return {"id": chat_id, "type": "supergroup", "title": "Test group"}


def photo_file_id(message: dict) -> str:
    return message["photo"][-1]["file_id"]


def downloads_of(server: BotApiServer, file_id: str, after: int) -> list[ApiCall]:
    return [
        c for c in server.calls[after:] if c.method == "getFile" and c.params["file_id"] == file_id
    ]


def files_holding(directory: Path, text: str) -> list[str]:
    files = (p for p in directory.iterdir() if p.is_file())
    return sorted(p.name for p in files if text.encode() in p.read_bytes())


async def forget(bot: RunningBot, user: TgUser, chat_id: int, *, presser: TgUser | None = None):
    """Send /forget in `chat_id` and press "yes"; return the answerCallbackQuery call."""
    server = bot.server
    mark = server.mark()
    server.send_text(
        user,
        "/forget",
        chat_id=chat_id,
        chat_type="private" if chat_id > 0 else "supergroup",
        sender_chat=group(chat_id) if user.id == ANONYMOUS_ADMIN_ID else None,
    )
    confirm = await reply_after(bot, chat_id, mark)
    [button] = confirm.params["reply_markup"]["inline_keyboard"][0][:1]
    message = next(
        m for m in server.messages(chat_id) if m.message_id == confirm.result["message_id"]
    )
    mark = server.mark()
    server.press_button(presser or user, message, button["callback_data"])
    return await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)


async def test_a_group_never_sees_a_members_private_photo_or_data(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7101, language_code="en")
    mark = server.mark()
    private = server.send_photo(ann, small_photo("PASSPORT"), caption="PRIVATE-CAPTION-7101")
    await final_answer_after(bot, ann.id, mark)

    mark = server.mark()
    server.send_text(
        ann, "@travel_test_bot what does it say?", chat_id=-7100, chat_type="supergroup"
    )
    await final_answer_after(bot, -7100, mark)
    assert downloads_of(server, photo_file_id(private), mark) == []
    history = await bot.storage.get_history(-7100, ann.id, max_turns=5)
    assert [(m.role, m.image_file_id) for m in history] == [("user", None), ("model", None)]

    mark = server.mark()
    server.send_text(ann, "/mydata", chat_id=-7100, chat_type="supergroup")
    told = await reply_after(bot, -7100, mark)
    assert told.params["text"] == t.get("en", "mydata_in_private")
    assert not [m for m in server.messages(-7100) if "PRIVATE-CAPTION" in (m.text or "")]
    mark = server.mark()
    server.send_text(ann, "/mydata")  # in private it is all there
    shown = await reply_after(bot, ann.id, mark)
    assert "PRIVATE-CAPTION-7101" in shown.params["text"]


async def test_anonymous_admins_of_two_groups_share_nothing(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    mark = server.mark()
    in_a = server.send_photo(
        ANONYMOUS, small_photo("A"), caption="@travel_test_bot A-ONLY-CAPTION", chat_id=-7201,
        chat_type="supergroup", sender_chat=group(-7201),
    )  # fmt: skip
    await final_answer_after(bot, -7201, mark)

    mark = server.mark()
    server.send_text(
        ANONYMOUS,
        "@travel_test_bot and this?",
        chat_id=-7202,
        chat_type="supergroup",
        sender_chat=group(-7202),
    )
    await final_answer_after(bot, -7202, mark)
    assert downloads_of(server, photo_file_id(in_a), mark) == []

    mark = server.mark()
    server.send_text(
        ANONYMOUS, "/mydata", chat_id=-7202, chat_type="supergroup", sender_chat=group(-7202)
    )
    told = await reply_after(bot, -7202, mark)
    assert "A-ONLY-CAPTION" not in told.params["text"]

    # B's anonymous admin erases B's anonymous history only, and only an admin of B may
    member, admin = TgUser(id=7203), TgUser(id=7204)
    server.admins[-7202] = {admin.id}
    refused = await forget(bot, ANONYMOUS, -7202, presser=member)
    assert refused.params["text"] == t.get("en", "button_not_yours")
    assert await bot.storage.get_history(-7202, -7202, max_turns=5) != []
    done = await forget(bot, ANONYMOUS, -7202, presser=admin)
    assert "text" not in done.params
    assert await bot.storage.get_history(-7202, -7202, max_turns=5) == []
    kept = await bot.storage.get_history(-7201, -7201, max_turns=5)
    assert kept[0].text == "A-ONLY-CAPTION"


@pytest.mark.settings(max_new_tokens=4000, max_seq_len=4096)
async def test_forget_while_an_answer_is_written_keeps_nothing(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7301, language_code="en")
    photo = small_photo("MENU")
    mark = server.mark()
    server.send_photo(ann, photo, caption="FORGET-ME-CAPTION-7301")
    placeholder = await reply_after(bot, ann.id, mark)
    await server.wait_for(lambda c: c.method == "sendMessageDraft", after=mark, timeout=60)
    assert bot.services.worker.num_running == 1  # the answer is being written
    kept = bot.services.worker._engine.runner.photos  # looked into: the engine's photo cache
    budget = bot.services.worker._engine.base.image_soft_tokens  # one photo: the full budget
    key = photo_key(await prepare_image(bot.services, photo), budget)
    assert kept.owners(key) == {user_ref(ann.id)}

    await forget(bot, ann, ann.id)
    done = await server.wait_for(
        lambda c: c.method == "editMessageText" and "text" in c.params
        and c.params["text"].startswith(t.get("en", "forget_done", count=0)[:10]),
        after=mark,
    )  # fmt: skip
    after_forget = server.mark()
    for _ in range(40):  # the engine lets go of it at once (it would write 4,000 tokens)
        if bot.services.worker.num_running == 0:
            break
        await asyncio.sleep(0.05)
    assert bot.services.worker.num_running == 0
    await asyncio.sleep(0.5)
    data = await bot.storage.get_user_data(ann.id)
    assert data.user is None and data.messages == []
    assert await bot.storage.get_unfinished_jobs() == []
    database = bot.services.settings.database_path
    assert files_holding(database.parent, "FORGET-ME-CAPTION") == []
    sent = [c for c in server.calls[after_forget:] if c.method == "sendMessage"]
    assert sent == []  # no answer arrives after "erased"
    deleted = server.calls_to("deleteMessage", ann.id)
    assert [c.params["message_id"] for c in deleted] == [placeholder.result["message_id"]]
    assert done.params["chat_id"] == ann.id
    assert kept.owners(key) == set() and kept.get(key) is None


async def test_forget_while_the_photo_downloads_keeps_nothing(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7401, language_code="en")
    server.file_delay_s = 1.5
    mark = server.mark()
    server.send_photo(ann, small_photo("SLOW"), caption="SLOW-DOWNLOAD-7401")
    await server.wait_for(lambda c: c.method == "getFile", after=mark)
    await forget(bot, ann, ann.id)
    await asyncio.sleep(2.0)  # the download ends after the erasure
    texts = [c.params.get("text") for c in server.calls[mark:] if c.method == "sendMessage"]
    assert t.get("en", "error_generic") not in texts
    placeholder = t.get("en", "placeholder_photo")
    assert not [text for text in texts if text and text.startswith(placeholder)]
    assert (await bot.storage.get_user_data(ann.id)).messages == []
    assert await bot.storage.get_user(ann.id) is None
    assert await bot.storage.get_unfinished_jobs() == []


async def test_channel_posts_are_ignored(bot: RunningBot) -> None:
    server = bot.server
    mark = server.mark()
    server.send_channel_post(-100_7501, "hello bot")
    server.send_text(TgUser(id=7502), "/help")  # the bot still serves everyone else
    await reply_after(bot, 7502, mark)
    await asyncio.sleep(0.3)
    assert [c for c in server.calls[mark:] if c.params.get("chat_id") == -100_7501] == []


@pytest.mark.settings(allowed_user_ids={7601})
async def test_channel_posts_do_not_pass_the_allowlist(bot: RunningBot) -> None:
    server = bot.server
    mark = server.mark()
    server.send_channel_post(-100_7601, "a photo please")
    await asyncio.sleep(0.5)
    assert [c for c in server.calls[mark:] if c.method != "getUpdates"] == []


async def test_forged_forget_buttons_erase_nothing_and_crash_nothing(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann, eve = TgUser(id=7701, language_code="en"), TgUser(id=7702, language_code="en")
    mark = server.mark()
    server.send_text(ann, "/think on")
    confirm = await reply_after(bot, ann.id, mark)
    message = next(
        m for m in server.messages(ann.id) if m.message_id == confirm.result["message_id"]
    )
    for data in ("forget:yes:²", "forget:yes:--5", "forget:yes:7701", "forget:yes:-100123"):
        mark = server.mark()
        server.press_button(eve, message, data)
        answered = await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
        assert answered.params["text"] in (
            t.get("en", "button_expired"),
            t.get("en", "button_not_yours"),
        ), data
    await asyncio.sleep(0.3)
    assert t.get("en", "error_generic") not in [c.params.get("text") for c in server.calls]
    assert (await bot.storage.get_user(ann.id)).think is True


async def test_only_the_member_who_asked_answers_their_forget_prompt(bot: RunningBot) -> None:
    """In a group anyone sees the /forget prompt: another member can neither erase nor
    cancel it for the one who asked."""
    server, t = bot.server, bot.services.texts
    ann, eve = TgUser(id=7301, language_code="en"), TgUser(id=7302, language_code="en")
    mark = server.mark()
    server.send_text(ann, "@travel_test_bot hello", chat_id=-7300, chat_type="supergroup")
    await final_answer_after(bot, -7300, mark)
    mark = server.mark()
    server.send_text(ann, "/forget", chat_id=-7300, chat_type="supergroup")
    confirm = await reply_after(bot, -7300, mark)
    yes, no = (b["callback_data"] for b in confirm.params["reply_markup"]["inline_keyboard"][0])
    message = next(
        m for m in server.messages(-7300) if m.message_id == confirm.result["message_id"]
    )
    for data in (no, yes):
        mark = server.mark()
        server.press_button(eve, message, data)
        refused = await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
        assert refused.params["text"] == t.get("en", "button_not_yours"), data
        await asyncio.sleep(0.2)
        assert [c for c in server.calls[mark:] if c.method == "editMessageText"] == []
    assert await bot.storage.get_history(-7300, ann.id, max_turns=5) != []
    mark = server.mark()
    server.press_button(ann, message, no)
    edited = await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    assert edited.params["text"] == t.get("en", "forget_cancelled")


async def test_a_channel_speaking_in_a_group_is_erased_by_its_admin(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    channel = {"id": -100_7801, "type": "channel", "title": "Ann's channel"}
    poster = TgUser(id=777000, first_name="Telegram")  # the user id of posts as a channel
    mark = server.mark()
    server.send_text(poster, "@travel_test_bot CHANNEL-WORDS?", chat_id=-7800,
                     chat_type="supergroup", sender_chat=channel)  # fmt: skip
    await final_answer_after(bot, -7800, mark)
    assert await bot.storage.get_history(-7800, channel["id"], max_turns=5) != []
    group_admin, channel_admin = TgUser(id=7802), TgUser(id=7803)
    server.admins = {-7800: {group_admin.id}, channel["id"]: {channel_admin.id}}
    mark = server.mark()
    server.send_text(poster, "/forget", chat_id=-7800, chat_type="supergroup",
                     sender_chat=channel)  # fmt: skip
    confirm = await reply_after(bot, -7800, mark)
    [yes, _] = confirm.params["reply_markup"]["inline_keyboard"][0]
    message = next(
        m for m in server.messages(-7800) if m.message_id == confirm.result["message_id"]
    )
    for presser, erased in ((group_admin, False), (channel_admin, True)):
        mark = server.mark()
        server.press_button(presser, message, yes["callback_data"])
        answered = await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
        assert ("text" not in answered.params) == erased
        assert (await bot.storage.get_history(-7800, channel["id"], max_turns=5) == []) == erased
    assert t.get("en", "error_generic") not in [c.params.get("text") for c in server.calls]


async def test_an_update_delivered_again_after_forget_brings_nothing_back(
    bot: RunningBot,
) -> None:
    server = bot.server
    ann = TgUser(id=7901, language_code="en")
    mark = server.mark()
    sent = server.send_photo(ann, small_photo("AGAIN"), caption="REDELIVERED-7901")
    await final_answer_after(bot, ann.id, mark)
    await forget(bot, ann, ann.id)
    await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    mark = server.mark()
    server.push_update({"message": sent})  # as Telegram does after a crash
    await asyncio.sleep(1.0)
    assert [c for c in server.calls[mark:] if c.method == "sendMessage"] == []
    database = bot.services.settings.database_path
    assert files_holding(database.parent, "REDELIVERED-7901") == []


async def test_a_channels_automatic_copy_in_its_group_is_ignored(bot: RunningBot) -> None:
    server = bot.server
    channel = {"id": -100_7951, "type": "channel", "title": "News"}
    copy = {
        "message_id": 1, "date": int(time.time()), "text": "a channel post",
        "chat": {"id": -7950, "type": "supergroup", "title": "Discussion"},
        "from": TgUser(id=777000, first_name="Telegram").to_dict(),
        "sender_chat": channel, "is_automatic_forward": True,
    }  # fmt: skip
    mark = server.mark()
    server.push_update({"message": copy})
    server.send_text(TgUser(id=7952), "/help")
    await reply_after(bot, 7952, mark)
    await asyncio.sleep(0.3)
    assert [c for c in server.calls[mark:] if c.params.get("chat_id") == -7950] == []


async def test_settings_commands_delivered_again_after_forget_store_nothing(
    bot: RunningBot,
) -> None:
    server = bot.server
    ann = TgUser(id=7971, language_code="en")
    mark = server.mark()
    command = server.send_text(ann, "/lang de")
    await reply_after(bot, ann.id, mark)
    command["date"] -= 2  # sent a while before the /forget below
    await forget(bot, ann, ann.id)
    await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    assert await bot.storage.get_user(ann.id) is None
    mark = server.mark()
    server.push_update({"message": command})  # as Telegram does after a crash
    server.send_text(ann, "/think on")  # a new message still counts
    await reply_after(bot, ann.id, mark)
    await asyncio.sleep(0.3)
    user = await bot.storage.get_user(ann.id)
    assert (user.language, user.think) == ("en", True)


async def test_a_second_tap_on_a_button_is_no_error(bot: RunningBot, capsys) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7981, language_code="en")
    mark = server.mark()
    server.send_text(ann, "/forget")
    confirm = await reply_after(bot, ann.id, mark)
    message = next(
        m for m in server.messages(ann.id) if m.message_id == confirm.result["message_id"]
    )
    for _ in range(2):
        mark = server.mark()
        server.press_button(ann, message, "forget:no")
        await server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)
        await server.wait_for(lambda c: c.method == "editMessageText", after=mark)
    await asyncio.sleep(1.0)
    assert t.get("en", "error_generic") not in [c.params.get("text") for c in server.calls]
    assert "handler_failed" not in capsys.readouterr().out
