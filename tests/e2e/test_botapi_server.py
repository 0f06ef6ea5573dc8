"""The fake Bot API server against the real python-telegram-bot client."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.e2e.botapi_server import TOKEN, BotApiServer, TgUser

ANN = TgUser(id=1001, first_name="Ann", username="ann")


def _jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    srv = BotApiServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def bot(server: BotApiServer) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=server.base_url, base_file_url=server.base_file_url) as b:
        yield b


async def test_bare_bot_methods(server: BotApiServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (424242, "travel_test_bot", True)

    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Deutsch", callback_data="lang:de")]])
    sent = await bot.send_message(
        ANN.id, "<b>Hello</b> &amp; welcome", parse_mode=ParseMode.HTML, reply_markup=keyboard
    )
    assert sent.text == "Hello & welcome"
    assert sent.entities[0].type == "bold" and sent.entities[0].length == 5
    assert sent.reply_markup == keyboard
    second = await bot.send_message(ANN.id, "plain")
    assert second.message_id == sent.message_id + 1

    call = server.calls_to("sendMessage", chat_id=ANN.id)[0]
    assert call.params["chat_id"] == ANN.id
    assert call.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "lang:de"

    edited = await bot.edit_message_text("Bye", chat_id=ANN.id, message_id=sent.message_id)
    assert edited.text == "Bye" and edited.reply_markup is None
    state = server.messages(ANN.id)[0]
    assert (state.text, state.edits, state.reply_markup) == ("Bye", 1, None)
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text("Bye", chat_id=ANN.id, message_id=sent.message_id)
    await bot.edit_message_reply_markup(ANN.id, sent.message_id, reply_markup=keyboard)
    assert server.messages(ANN.id)[0].reply_markup == keyboard.to_dict()

    assert await bot.send_message_draft(ANN.id, draft_id=7, text="Think")
    draft = server.calls_to("sendMessageDraft")[0]
    assert draft.params["draft_id"] == 7 and draft.params["text"] == "Think"
    assert len(server.messages(ANN.id)) == 2  # drafts are not messages

    assert await bot.send_chat_action(ANN.id, ChatAction.TYPING)
    assert server.calls_to("sendChatAction")[0].params["action"] == "typing"

    assert await bot.delete_message(ANN.id, second.message_id)
    assert [m.text for m in server.visible_messages(ANN.id)] == ["Bye"]
    assert server.messages(ANN.id)[1].deleted

    file_id, unique_id = server.add_file(b"\x00binary\xffdata", file_name="menu.pdf")
    tg_file = await bot.get_file(file_id)
    assert tg_file.file_unique_id == unique_id and tg_file.file_size == 12
    assert await tg_file.download_as_bytearray() == bytearray(b"\x00binary\xffdata")

    photo = _jpeg(40, 30)
    msg = await bot.send_photo(ANN.id, photo, caption="<i>pic</i>", parse_mode="HTML")
    assert msg.caption == "pic" and msg.photo[-1].width == 40
    assert server.messages(ANN.id)[-1].photo == photo


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # RetryAfter str
async def test_errors(server: BotApiServer, bot: Bot) -> None:
    for bad_html, reason in [
        ("a < b", "Character '<'"),
        ("<b>bold", "Can't find end tag"),
        ("<b><i>x</b></i>", "Unmatched end tag"),
        ("<div>x</div>", "Unsupported start tag"),
        ("fish & chips", "Character '&'"),
        ('<span class="x">s</span>', "tg-spoiler"),
    ]:
        with pytest.raises(BadRequest, match=rf"(?i){reason}"):  # PTB lower-cases the text
            await bot.send_message(ANN.id, bad_html, parse_mode="HTML")
    ok = (
        '<a href="https://x.org">l</a> <tg-spoiler>s</tg-spoiler> <span class="tg-spoiler">s'
        '</span> <pre><code class="language-py">x = 1 &lt; 2</code></pre> <blockquote '
        "expandable>q</blockquote> &#128512; &quot;"
    )
    msg = await bot.send_message(ANN.id, ok, parse_mode="HTML")
    assert "x = 1 < 2" in msg.text
    assert {e.type for e in msg.entities} >= {"text_link", "spoiler", "pre"}

    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(ANN.id, "x" * 4097)
    await bot.send_message(ANN.id, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")  # tags free

    def keyboard(data: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("b", callback_data=data)]])

    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(ANN.id, "x", reply_markup=keyboard("é" * 32 + "x"))  # 65 bytes
    await bot.send_message(ANN.id, "x", reply_markup=keyboard("é" * 32))

    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("nope")

    server.fail_next("sendMessage", times=2)
    for _ in range(2):
        with pytest.raises(RetryAfter, match=r"(?i)retry in 1 seconds"):
            await bot.send_message(ANN.id, "hi")
    await bot.send_message(ANN.id, "hi")
    assert server.calls_to("sendMessage")[-2].result["error_code"] == 429

    server.fail_next("getMe", error_code=400, description="Bad Request: boom", retry_after=None)
    with pytest.raises(BadRequest, match=r"(?i)boom"):
        await bot.get_me()

    server.block_user(ANN.id)
    with pytest.raises(Forbidden, match=r"(?i)blocked"):
        await bot.send_message(ANN.id, "hi")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(ANN.id, ChatAction.TYPING)

    with pytest.raises(InvalidToken):
        async with Bot("1:wrong", base_url=server.base_url) as wrong:
            await wrong.get_me()


async def test_get_updates_offset_and_long_poll(server: BotApiServer, bot: Bot) -> None:
    first = server.send_text(ANN, "one")
    server.send_text(ANN, "two")
    updates = await bot.get_updates(timeout=5)
    assert [u.message.text for u in updates] == ["one", "two"]
    assert updates[0].message.message_id == first["message_id"]
    updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    assert updates == ()

    loop = asyncio.get_running_loop()
    loop.call_later(0.2, server.send_text, ANN, "/start now")
    started = loop.time()
    updates = await bot.get_updates(offset=3, timeout=5)
    assert loop.time() - started < 2
    assert updates[0].message.text == "/start now"
    assert updates[0].message.entities[0].type == "bot_command"
    assert updates[0].message.entities[0].length == 6


async def test_stop_ends_pending_long_poll(server: BotApiServer, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await asyncio.sleep(0.2)  # let the request reach the server
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.stop()
    assert await asyncio.wait_for(poll, 2) == ()
    assert loop.time() - started < 1.5


async def test_user_side_builders_parse_in_ptb(server: BotApiServer, bot: Bot) -> None:
    server.send_document(ANN, b"%PDF-1", file_name="menu.pdf", mime_type="application/pdf")
    server.send_sticker(ANN)
    server.send_voice(ANN)
    group = server.send_text(ANN, "/start@travel_test_bot", chat_type="group")
    updates = await bot.get_updates(timeout=0)
    doc, sticker, voice, in_group = (u.message for u in updates)
    assert (doc.document.file_name, doc.document.mime_type) == ("menu.pdf", "application/pdf")
    assert await (await doc.document.get_file()).download_as_bytearray() == b"%PDF-1"
    assert sticker.sticker.width == 512 and voice.voice.mime_type == "audio/ogg"
    assert in_group.chat.type == "group" and in_group.chat.id == group["chat"]["id"] < 0
    assert in_group.chat.title == "Test group" and in_group.from_user.id == ANN.id


async def test_raw_http_encodings(server: BotApiServer) -> None:
    url = f"{server.base_url}{TOKEN}"
    markup = {"inline_keyboard": [[{"text": "a", "callback_data": "b"}]]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/SENDMESSAGE", json={"chat_id": 5, "text": "{x}"}) as resp:
            assert (await resp.json())["result"]["text"] == "{x}"
        query = {
            "chat_id": "5",
            "message_id": "1",
            "text": "[y]",
            "reply_markup": json.dumps(markup),
        }
        async with http.get(f"{url}/editMessageText", params=query) as resp:
            assert (await resp.json())["result"]["reply_markup"] == markup
        async with http.post(f"{url}/setSomethingNew", data={"flag": "true", "n": "3"}) as resp:
            assert await resp.json() == {"ok": True, "result": True}
        async with http.post(f"{server.base_url}1:bad/getMe") as resp:
            assert resp.status == 401
            assert await resp.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
    send, edit, new = server.calls
    assert (send.method, send.params) == ("sendMessage", {"chat_id": 5, "text": "{x}"})
    assert edit.params == {"chat_id": 5, "message_id": 1, "text": "[y]", "reply_markup": markup}
    assert (new.method, new.params) == ("setSomethingNew", {"flag": True, "n": "3"})
    assert server.messages(5)[0].text == "[y]" and server.messages(5)[0].reply_markup == markup


async def test_application_polling(server: BotApiServer) -> None:
    downloaded: list[bytes] = []

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data="go")]])
        await update.effective_message.reply_text("Welcome!", reply_markup=keyboard)

    async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        tg_file = await update.message.photo[-1].get_file()
        downloaded.append(bytes(await tg_file.download_as_bytearray()))
        await update.message.reply_text(f"Got {update.message.caption}")

    async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer()
        await update.callback_query.edit_message_text(f"Pressed {update.callback_query.data}")

    app = (
        ApplicationBuilder()
        .token(TOKEN)
        .base_url(server.base_url)
        .base_file_url(server.base_file_url)
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(MessageHandler(filters.PHOTO, photo))
    app.add_handler(CallbackQueryHandler(button))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    try:
        mark = server.mark()
        server.send_text(ANN, "/start")
        welcome = await server.wait_for_message(ANN.id, lambda m: m.text == "Welcome!", timeout=3)
        assert welcome.reply_markup["inline_keyboard"][0][0]["callback_data"] == "go"
        call = await server.wait_for(lambda c: c.method == "sendMessage", after=mark, timeout=1)
        assert call.params["chat_id"] == ANN.id

        image = _jpeg(640, 480)
        update_msg = server.send_photo(ANN, image, caption="menu")
        assert [(p["width"], p["height"]) for p in update_msg["photo"]] == [(320, 240), (640, 480)]
        await server.wait_for_message(ANN.id, lambda m: m.text == "Got menu", timeout=3)
        assert downloaded == [image]

        query_id = server.press_button(ANN, welcome, "go")
        await server.wait_for_message(ANN.id, lambda m: m.text == "Pressed go", timeout=3)
        answer = await server.wait_for(lambda c: c.method == "answerCallbackQuery", timeout=1)
        assert answer.params["callback_query_id"] == query_id
        assert server.messages(ANN.id)[0].edits == 1

        with pytest.raises(TimeoutError, match="sendMessage"):
            await server.wait_for(lambda c: c.method == "sendPhoto", timeout=0.2)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def test_webhook_mode_pushes_updates_with_the_secret(server: BotApiServer) -> None:
    """After setWebhook updates are POSTed with the secret header and getUpdates answers 409;
    deleteWebhook brings back polling. A plain aiohttp app plays the bot's webhook server."""
    received: list[tuple[str | None, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        secret = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
        received.append((secret, await request.json()))
        return web.Response(status=200 if len(received) == 1 else 403)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    url = f"{server.base_url}{TOKEN}"
    try:
        async with aiohttp.ClientSession() as http:
            webhook = {"url": hook_url, "secret_token": "123"}  # digits stay a string
            async with http.post(f"{url}/setWebhook", data=webhook) as resp:
                assert (await resp.json())["result"] is True
            async with http.post(f"{url}/getWebhookInfo") as resp:
                assert (await resp.json())["result"]["url"] == hook_url
            async with http.post(f"{url}/getUpdates") as resp:
                assert resp.status == 409
            server.send_text(ANN, "/start")
            server.send_text(ANN, "again")
            for _ in range(100):  # deliveries run as tasks
                if len(server.webhook_statuses) == 2:
                    break
                await asyncio.sleep(0.05)
            assert server.webhook_statuses == [200, 403]
            assert [secret for secret, _ in received] == ["123", "123"]
            assert received[0][1]["message"]["text"] == "/start"
            assert received[0][1]["update_id"] < received[1][1]["update_id"]
            async with http.post(f"{url}/deleteWebhook") as resp:
                assert (await resp.json())["result"] is True
            server.send_text(ANN, "polled")
            async with http.post(f"{url}/getUpdates") as resp:
                updates = (await resp.json())["result"]
            assert [u["message"]["text"] for u in updates] == ["polled"]
            assert len(received) == 2
    finally:
        await runner.cleanup()
