""" "Say it" end to end through the real PTB client and the local Bot API server.

The tiny model's noise must take the no-block path: a plain answer, no buttons, no error.
Phrases, buttons and pictures need a model that writes a block, which random weights never
do: those tests get SCRIPTED model outputs from `ScriptedChatServer`, an OpenAI-compatible
endpoint that streams a fixed text in small pieces. The bot reaches it through its real
RemoteWorker (engine="openai"), as it reaches vLLM or SGLang, so the same stream splitter is
tested on the server path; only the model's words are scripted.
"""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from PIL import Image

from bot.phrases import read_callback
from tests.conftest import RunningBot, ScriptedChatServer, small_photo
from tests.e2e.botapi_server import ApiCall, SentMessage, TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after

PORK = {"text": "豚肉抜きでお願いします", "romanization": "Butaniku nuki de onegaishimasu",
        "meaning": "Without pork, please"}  # fmt: skip
ARABIC = {"text": "أين الرصيف رقم ٣؟", "romanization": "ayna ar-rasif raqm thalatha?",
          "meaning": "Where is platform 3?"}  # fmt: skip
SCRIPTED_PROSE = "**ラーメン** (ramen): noodle soup with a pork broth.\n\n- **餃子**: dumplings."
SCRIPTED_ANSWER = (
    f"{SCRIPTED_PROSE}\n\n```json\n"
    + json.dumps({"phrases": [PORK, ARABIC], "prices": []}, ensure_ascii=False)
    + "\n```"
)
SCRIPTED_BROKEN_AND_CUT = f'{SCRIPTED_PROSE}\n\n```json\n{{"phrases": [{{"text": "豚肉'


@pytest.fixture
def engine_overrides(scripted_server: ScriptedChatServer) -> dict:
    return scripted_server.engine_settings()


def shown_while_streaming(bot: RunningBot, chat_id: int, mark: int) -> list[str]:
    return [
        c.params.get("text", "")
        for c in bot.server.calls[mark:]
        if c.method in ("sendMessageDraft", "editMessageText")
        and c.params.get("chat_id") == chat_id
    ]


def answer_messages(bot: RunningBot, chat_id: int, mark: int) -> list[ApiCall]:
    """The final answer's messages (those sent after the placeholder)."""
    sent = [
        c
        for c in bot.server.calls[mark:]
        if c.method == "sendMessage" and c.params.get("chat_id") == chat_id
    ]
    return sent[1:]


def buttons(call: ApiCall) -> list[dict]:
    markup = call.params.get("reply_markup")
    if isinstance(markup, str):
        markup = json.loads(markup)
    return [button for row in (markup or {}).get("inline_keyboard", []) for button in row]


def sent_message(bot: RunningBot, call: ApiCall) -> SentMessage:
    chat_id = call.params["chat_id"]
    return next(
        m for m in bot.server.messages(chat_id) if m.message_id == call.result["message_id"]
    )


async def press(bot: RunningBot, user: TgUser, message: SentMessage, data: str) -> ApiCall:
    mark = bot.server.mark()
    bot.server.press_button(user, message, data)
    return await bot.server.wait_for(lambda c: c.method == "answerCallbackQuery", after=mark)


def photos_after(bot: RunningBot, chat_id: int, mark: int) -> list[ApiCall]:
    return [
        c for c in bot.server.calls_to("sendPhoto", chat_id) if bot.server.calls.index(c) >= mark
    ]


@pytest.mark.parametrize("engine_overrides", [{}])  # the tiny Gemma 4 in process
async def test_the_tiny_models_noise_gives_a_plain_answer_without_buttons(
    bot: RunningBot, engine_overrides: dict
) -> None:
    t = bot.services.texts
    ann = TgUser(id=8101, language_code="en")
    mark = bot.server.mark()
    bot.server.send_photo(ann, small_photo("MENU"))
    await final_answer_after(bot, ann.id, mark)
    final = answer_messages(bot, ann.id, mark)
    assert final
    assert not any(b["callback_data"].startswith("say:") for c in final for b in buttons(c))
    texts = [c.params.get("text", "") for c in final] + shown_while_streaming(bot, ann.id, mark)
    assert not any(t.get("en", key) in text for text in texts for key in ("error_engine", "say_it"))
    [_, answer] = await bot.storage.get_history(ann.id, ann.id, max_turns=1)
    assert "```json" not in answer.text


async def test_phrases_are_shown_under_the_answer_and_held_up_as_pictures(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=8201, language_code="en")
    scripted_server.script(SCRIPTED_ANSWER)
    mark = server.mark()
    server.send_photo(ann, small_photo("MENU"))
    await final_answer_after(bot, ann.id, mark)

    streamed = shown_while_streaming(bot, ann.id, mark)
    assert streamed and all("```" not in s and "phrases" not in s for s in streamed)
    [answer] = answer_messages(bot, ann.id, mark)
    text = answer.params["text"]
    assert "ラーメン" in text and "```" not in text and "prices" not in text
    for phrase in (PORK, ARABIC):
        assert phrase["text"] in text and phrase["romanization"] in text
    assert text.index("ラーメン") < text.index(t.get("en", "say_it")) < text.index(PORK["text"])

    [first, second, show_on_photo] = buttons(answer)
    assert show_on_photo["callback_data"].startswith("ovl:")
    assert first["text"] == t.get("en", "show_to_staff", phrase="豚肉抜きでお願いします")
    for button in (first, second):
        assert len(button["callback_data"].encode()) <= 64 and read_callback(
            button["callback_data"]
        )

    message = sent_message(bot, answer)
    mark = server.mark()
    answered = await press(bot, ann, message, second["callback_data"])
    assert "text" not in answered.params
    photo = await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=30)
    assert photo.params["caption"] == ARABIC["meaning"]
    picture = server.messages(ann.id)[-1].photo
    assert Image.open(io.BytesIO(picture)).size == (1280, 720)

    # the model sees its earlier phrases in the block it was asked for
    scripted_server.script("Say it slowly.")
    mark = server.mark()
    server.send_text(ann, "How do I say the first one politely?")
    await final_answer_after(bot, ann.id, mark)
    [earlier] = [m for m in scripted_server.bodies[-1]["messages"] if m["role"] == "assistant"]
    assert earlier["content"].startswith(SCRIPTED_PROSE + "\n\n```json\n")
    assert PORK["text"] in earlier["content"] and "prices" not in earlier["content"]

    # /mydata says what is kept; after /forget a button finds nothing and draws nothing
    mark = server.mark()
    server.send_text(ann, "/mydata")
    shown = await reply_after(bot, ann.id, mark)
    assert PORK["text"] in shown.params["text"] and "```" not in shown.params["text"]
    await bot.services.erase_user(ann.id)
    mark = server.mark()
    answered = await press(bot, ann, message, first["callback_data"])
    assert answered.params["text"] == t.get("en", "button_expired")
    await asyncio.sleep(0.3)
    assert photos_after(bot, ann.id, mark) == []


async def test_a_phrase_button_works_only_for_whom_it_was_sent_in_that_chat(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann, bob = TgUser(id=8301, language_code="en"), TgUser(id=8302, language_code="en")
    group = -8300
    scripted_server.script(SCRIPTED_ANSWER)
    mark = server.mark()
    server.send_photo(
        ann, small_photo("MENU"), caption="@travel_test_bot", chat_id=group, chat_type="supergroup"
    )
    await final_answer_after(bot, group, mark)
    [answer] = answer_messages(bot, group, mark)
    data = buttons(answer)[0]["callback_data"]
    message = sent_message(bot, answer)
    row, _ = read_callback(data)

    mark = server.mark()
    answered = await press(bot, bob, message, data)
    assert answered.params["text"] == t.get("en", "button_not_yours")
    for forged in (f"say:{row}:7", "say:99999999:0", f"say:{row}:x", "say:" + "9" * 40):
        answered = await press(bot, ann, message, forged)
        assert answered.params["text"] == t.get("en", "button_expired"), forged
    await asyncio.sleep(0.3)
    assert photos_after(bot, group, mark) == []

    answered = await press(bot, ann, message, data)
    await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=30)


async def test_a_broken_block_cut_by_the_token_limit_leaves_a_plain_answer(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=8401, language_code="en")
    scripted_server.script(SCRIPTED_BROKEN_AND_CUT, finish_reason="length")
    mark = server.mark()
    server.send_photo(ann, small_photo("MENU"))
    await final_answer_after(bot, ann.id, mark)
    assert all("```" not in s and "豚肉" not in s for s in shown_while_streaming(bot, ann.id, mark))
    final = answer_messages(bot, ann.id, mark)
    assert "ラーメン" in final[0].params["text"] and "```" not in final[0].params["text"]
    assert final[-1].params["text"] == f"<i>{t.get('en', 'answer_cut')}</i>"
    assert not any(b["callback_data"].startswith("say:") for c in final for b in buttons(c))
    [_, stored] = await bot.storage.get_history(ann.id, ann.id, max_turns=1)
    assert stored.text == SCRIPTED_PROSE


async def test_forget_while_a_phrase_picture_is_being_sent_stops_it(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    """Telegram answers the picture's first send with "retry after 1 s"; /forget meanwhile
    erased the answer: the picture must not arrive after "erased"."""
    server = bot.server
    ann = TgUser(id=8501, language_code="en")
    scripted_server.script(SCRIPTED_ANSWER)
    mark = server.mark()
    server.send_photo(ann, small_photo("MENU"))
    await final_answer_after(bot, ann.id, mark)
    [answer] = answer_messages(bot, ann.id, mark)
    server.fail_next("sendPhoto")
    mark = server.mark()
    await press(bot, ann, sent_message(bot, answer), buttons(answer)[0]["callback_data"])
    await server.wait_for(lambda c: c.method == "sendPhoto", after=mark, timeout=30)
    await bot.services.erase_user(ann.id)
    await asyncio.sleep(2)
    assert [c for c in photos_after(bot, ann.id, mark) if c.result.get("ok", True)] == []
