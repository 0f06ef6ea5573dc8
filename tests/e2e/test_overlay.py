""" "Show on the photo" and /overlay end to end through the real PTB client and the local Bot
API server.

The tiny Gemma 4 in process answers noise: its regions reply must give the plain answer and a
short note, never an error. Drawn pictures need a model that writes boxes, which random
weights never do: those tests get SCRIPTED model outputs from `ScriptedChatServer` (an
OpenAI-compatible endpoint that streams a fixed text), reached through the bot's real
RemoteWorker as vLLM or SGLang would be; only the model's words are scripted. The text
detector that snaps the boxes is the real one.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from bot.drawing import read_callback
from tests.conftest import RunningBot, ScriptedChatServer, png_bytes, small_photo
from tests.e2e.botapi_server import ApiCall, TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after
from tests.e2e.test_say_it import answer_messages, buttons, photos_after, press, sent_message

SCRIPTED_ANSWER = "The sign says **EXIT**: the way out is here."
SCRIPTED_REGIONS = (
    "```json\n"
    + json.dumps(
        {
            "regions": [
                {"box_2d": [380, 40, 560, 400], "text": "EXIT", "translation": "Ausgang"},
                {"box_2d": [-50, -20, 80, 1400], "text": "top", "translation": "oben"},  # outside
                {
                    "box_2d": [900, 700, 700, 300],
                    "text": "x",
                    "translation": "vertauscht",
                },  # swapped
                {"box_2d": [0, 0, 0, 0], "text": "y", "translation": "kein Platz"},  # no area
                {"box_2d": ["NaN", 1, 2, 3], "text": "z", "translation": "kaputt"},
            ]
        },
        ensure_ascii=False,
    )
    + "\n```"
)
SCRIPTED_NOT_PARSEABLE = 'Here are the boxes: ```json\n{"regions": [{"box_2d": [1, 2,'


@pytest.fixture
def engine_overrides(scripted_server: ScriptedChatServer) -> dict:
    return scripted_server.engine_settings()


def sign(size: tuple[int, int] = (640, 480), text: str = "EXIT") -> bytes:
    image = Image.new("RGB", size, (30, 110, 60))
    ImageDraw.Draw(image).rectangle((40, 190, 250, 260), fill="white")
    ImageDraw.Draw(image).text((60, 210), text, fill="black")
    return png_bytes(image, "JPEG")


def overlay_buttons(call: ApiCall) -> list[dict]:
    return [b for b in buttons(call) if b["callback_data"].startswith("ovl:")]


async def answered_photo(
    bot: RunningBot, user: TgUser, photo: bytes, chat_id: int | None = None, **kwargs
) -> ApiCall:
    mark = bot.server.mark()
    bot.server.send_photo(user, photo, chat_id=chat_id, **kwargs)
    chat = chat_id if chat_id is not None else user.id
    await final_answer_after(bot, chat, mark)
    return answer_messages(bot, chat, mark)[-1]


def picture_of(bot: RunningBot, call: ApiCall) -> Image.Image:
    [message] = [
        m
        for m in bot.server.messages(call.params["chat_id"])
        if m.message_id == call.result["message_id"]
    ]
    return Image.open(io.BytesIO(message.photo))


def mean_difference(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    diff = ImageChops.difference(a.crop(box), b.crop(box)).convert("L")
    return ImageStat.Stat(diff).mean[0]


def image_sent_to_model(body: dict) -> Image.Image:
    [user] = [m for m in body["messages"] if m["role"] == "user"]
    [part] = [p for p in user["content"] if p["type"] == "image_url"]
    data = part["image_url"]["url"].split(",", 1)[1]
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.mark.parametrize("engine_overrides", [{}])  # the tiny Gemma 4 in process
async def test_the_tiny_models_noise_gives_a_short_note_never_an_error(
    bot: RunningBot, engine_overrides: dict
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9101, language_code="de")
    answer = await answered_photo(bot, ann, small_photo("AUSGANG"))
    [button] = overlay_buttons(answer)
    assert button["text"] == t.get("de", "overlay_button")

    mark = server.mark()
    answered = await press(bot, ann, sent_message(bot, answer), button["callback_data"])
    assert answered.params["text"] == t.get("de", "overlay_drawing")
    note = await reply_after(bot, ann.id, mark)
    assert note.params["text"] == t.get("de", "overlay_unreadable")
    assert note.params["reply_parameters"]["message_id"] == answer.result["message_id"]
    assert photos_after(bot, ann.id, mark) == []
    sent = [c.params.get("text", "") for c in server.calls[mark:] if c.method == "sendMessage"]
    assert t.get("de", "error_engine") not in sent

    # /overlay on: the same request follows the answer by itself, and ends the same way
    mark = server.mark()
    server.send_text(ann, "/overlay on")
    assert (await reply_after(bot, ann.id, mark)).params["text"] == t.get("de", "overlay_now_on")
    mark = server.mark()
    server.send_photo(ann, small_photo("KASSE"))
    await server.wait_for(
        lambda c: (
            c.method == "sendMessage" and c.params.get("text") == t.get("de", "overlay_unreadable")
        ),
        after=mark,
        timeout=60,
    )


async def test_pressed_the_translation_comes_back_drawn_on_the_photo(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9201, language_code="de")
    scripted_server.script(SCRIPTED_ANSWER)
    photo = sign()
    answer = await answered_photo(bot, ann, photo)
    assert "the way out is here" in answer.params["text"]
    [button] = overlay_buttons(answer)
    assert len(button["callback_data"].encode()) <= 64

    scripted_server.script(SCRIPTED_REGIONS)
    mark = server.mark()
    await press(bot, ann, sent_message(bot, answer), button["callback_data"])
    sent = await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=30)
    assert sent.params["caption"].startswith(t.get("de", "overlay_caption"))
    assert sent.params["reply_parameters"]["message_id"] == answer.result["message_id"]
    drawn = picture_of(bot, sent).convert("RGB")
    assert drawn.width == 640 and drawn.height >= 480  # the photo (and a legend, if any)
    # the EXIT plate is written over ("Ausgang" in larger letters); where no box is, the
    # photo is as it was
    original = Image.open(io.BytesIO(photo)).convert("RGB")
    assert mean_difference(drawn, original, (40, 190, 250, 260)) > 20
    assert mean_difference(drawn, original, (480, 100, 630, 170)) < 3

    # what the model was asked: only the regions block, in Google's box convention, in German,
    # about the stored photo
    body = scripted_server.bodies[-1]
    task = body["messages"][-1]["content"][-1]["text"]
    assert "box_2d" in task and "0-1000" in task and "German" in task
    assert image_sent_to_model(body).size == (640, 480)


async def test_a_reply_nothing_can_be_drawn_from_gives_a_note(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9301, language_code="ja")
    scripted_server.script(SCRIPTED_ANSWER)
    answer = await answered_photo(bot, ann, sign())
    for reply in (SCRIPTED_NOT_PARSEABLE, '```json\n{"regions": [{"box_2d": [5, 5, 5, 5]}]}\n```'):
        scripted_server.script(reply)
        mark = server.mark()
        data = overlay_buttons(answer)[0]["callback_data"]
        await press(bot, ann, sent_message(bot, answer), data)
        note = await reply_after(bot, ann.id, mark)
        assert note.params["text"] == t.get("ja", "overlay_unreadable")
        assert photos_after(bot, ann.id, mark) == []


async def test_forged_stale_and_foreign_buttons_draw_nothing(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann, bob = TgUser(id=9401, language_code="en"), TgUser(id=9402, language_code="en")
    group = -9400
    scripted_server.script(SCRIPTED_ANSWER)
    answer = await answered_photo(
        bot, ann, sign(), chat_id=group, caption="@travel_test_bot", chat_type="supergroup"
    )
    data = overlay_buttons(answer)[0]["callback_data"]
    row, _ = read_callback(data)
    message = sent_message(bot, answer)

    mark = server.mark()
    answered = await press(bot, bob, message, data)  # another member's answer
    assert answered.params["text"] == t.get("en", "button_not_yours")
    for forged in (f"ovl:{row}:7", "ovl:99999999:0", f"ovl:{row}:x", "ovl:" + "9" * 40, "ovl:"):
        answered = await press(bot, ann, message, forged)
        assert answered.params["text"] == t.get("en", "button_expired"), forged
    # the row of a text answer (no photo) is no photo to draw on
    scripted_server.script("Plain follow-up.")
    follow = server.mark()
    server.send_text(ann, "@travel_test_bot and the price?", chat_id=group, chat_type="supergroup")
    await final_answer_after(bot, group, follow)
    [*_, text_answer] = await bot.storage.get_history(group, ann.id, max_turns=1)
    answered = await press(bot, ann, message, f"ovl:{text_answer.id}:0")
    assert answered.params["text"] == t.get("en", "button_expired")
    await asyncio.sleep(0.3)
    assert photos_after(bot, group, mark) == []

    # after /forget the button finds nothing, and the model is not asked
    await bot.services.erase_user(ann.id)
    asked = len(scripted_server.bodies)
    answered = await press(bot, ann, message, data)
    assert answered.params["text"] == t.get("en", "button_expired")
    await asyncio.sleep(0.3)
    assert len(scripted_server.bodies) == asked
    assert photos_after(bot, group, mark) == []


async def test_an_albums_answer_has_a_button_per_page_that_draws_that_page(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9501, language_code="en")
    pages = [sign((640, 480), "PAGE 1"), sign((480, 640), "PAGE 2"), sign((600, 400), "PAGE 3")]
    scripted_server.script(SCRIPTED_ANSWER)
    mark = server.mark()
    server.send_album(ann, pages)
    await final_answer_after(bot, ann.id, mark)
    answer = answer_messages(bot, ann.id, mark)[-1]
    page_buttons = overlay_buttons(answer)
    assert [b["text"] for b in page_buttons] == [
        t.get("en", "overlay_page_button", page=n) for n in (1, 2, 3)
    ]

    scripted_server.script(SCRIPTED_REGIONS)
    mark = server.mark()
    await press(bot, ann, sent_message(bot, answer), page_buttons[1]["callback_data"])
    sent = await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=30)
    assert image_sent_to_model(scripted_server.bodies[-1]).size == (480, 640)  # page 2 alone
    assert picture_of(bot, sent).width == 480


async def test_overlay_on_draws_after_each_photo_and_mydata_shows_it(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=9601, language_code="fr")
    mark = server.mark()
    server.send_text(ann, "/overlay")
    usage = await reply_after(bot, ann.id, mark)
    assert usage.params["text"].startswith(
        t.get("fr", "overlay_usage", state=t.get("fr", "overlay_off")).split("\n")[0][:30]
    )
    mark = server.mark()
    server.send_text(ann, "/overlay on")
    assert (await reply_after(bot, ann.id, mark)).params["text"] == t.get("fr", "overlay_now_on")

    scripted_server.script(SCRIPTED_ANSWER)
    scripted_server.script(SCRIPTED_REGIONS)
    mark = server.mark()
    server.send_photo(ann, sign())
    sent = await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=60)
    assert sent.params["caption"].startswith(t.get("fr", "overlay_caption"))
    assert len(scripted_server.bodies) >= 2

    mark = server.mark()
    server.send_text(ann, "/mydata")
    shown = (await reply_after(bot, ann.id, mark)).params["text"]
    assert "/overlay off" in shown

    mark = server.mark()
    server.send_text(ann, "/overlay off")
    assert (await reply_after(bot, ann.id, mark)).params["text"] == t.get("fr", "overlay_now_off")
    asked = len(scripted_server.bodies)
    scripted_server.script(SCRIPTED_ANSWER)
    answer = await answered_photo(bot, ann, sign())
    assert overlay_buttons(answer)
    await asyncio.sleep(0.3)
    assert len(scripted_server.bodies) == asked + 1  # the answer only

    # /forget erases the setting with the rest
    await bot.services.erase_user(ann.id)
    assert await bot.storage.get_overlay(ann.id) is False


async def test_a_reply_to_the_drawn_translation_asks_about_the_photo_while_kept(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    """In a group, a member's reply to the translation drawn on Ann's photo asks about
    her photo itself, not the bot's picture over it; after her /forget, about no photo
    (never the drawn copy of it)."""
    from tests.e2e.test_privacy import forget

    server, chat = bot.server, -9700
    ann, bob = TgUser(id=9701), TgUser(id=9702, first_name="Bob")
    scripted_server.script(SCRIPTED_ANSWER)
    photo = sign()
    answer = await answered_photo(bot, ann, photo, chat, chat_type="supergroup",
                                  caption="@travel_test_bot")  # fmt: skip
    scripted_server.script(SCRIPTED_REGIONS)
    mark = server.mark()
    await press(bot, ann, sent_message(bot, answer), overlay_buttons(answer)[0]["callback_data"])
    drawn = await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=30)
    original = Image.open(io.BytesIO(photo)).convert("RGB")
    assert (
        mean_difference(picture_of(bot, drawn).convert("RGB"), original, (40, 190, 250, 260)) > 20
    )

    for erased in (False, True):
        if erased:
            await forget(bot, ann, ann.id)
        scripted_server.script("Plain follow-up.")
        mark = server.mark()
        server.send_text(bob, "@travel_test_bot and this?", chat_id=chat,
                         chat_type="supergroup", reply_to=sent_message(bot, drawn))  # fmt: skip
        await final_answer_after(bot, chat, mark)
        images = [
            part
            for message in scripted_server.bodies[-1]["messages"]
            if isinstance(message["content"], list)
            for part in message["content"]
            if part["type"] == "image_url"
        ]
        if erased:
            assert images == []
        else:
            asked = image_sent_to_model(scripted_server.bodies[-1]).convert("RGB")
            assert mean_difference(asked, original, (40, 190, 250, 260)) < 3
