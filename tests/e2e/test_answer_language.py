"""Answer languages beyond the UI locales, played through the real client: the bot talks
to a real `travelbot serve` (tiny Gemma 4) over HTTP, so the test reads the system message
it sent, which tells the model the answer language, while the user sees the nearest UI."""

from __future__ import annotations

import pytest

from inference.prompts import LANGUAGE_RULE
from tests.conftest import OpenAIServer, RecordingServer, RunningBot, small_photo
from tests.e2e.botapi_server import TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after


@pytest.fixture
def engine_overrides(recording_server: RecordingServer, openai_server: OpenAIServer) -> dict:
    return {
        "engine": "openai",
        "openai_base_urls": [recording_server.base_url],
        "openai_model": openai_server.model_name,
        "openai_api_key": openai_server.api_key,
    }


async def ask_about_photo(bot: RunningBot, user: TgUser) -> str:
    """Send a photo; the placeholder's text, once the answer is delivered."""
    mark = bot.server.mark()
    bot.server.send_photo(user, small_photo())
    placeholder = await reply_after(bot, user.id, mark)
    await final_answer_after(bot, user.id, mark)
    return placeholder.params["text"]


async def test_dutch_answers_with_an_english_ui(
    bot: RunningBot, recording_server: RecordingServer
) -> None:
    t = bot.services.texts
    ann = TgUser(id=7101, first_name="Ann", language_code="en")
    mark = bot.server.mark()
    bot.server.send_text(ann, "/lang nl")
    reply = await reply_after(bot, ann.id, mark)
    assert reply.params["text"] == t.get("en", "lang_set", language="Nederlands")
    assert (await bot.storage.get_user(ann.id)).language == "nl"

    placeholder = await ask_about_photo(bot, ann)
    assert placeholder.startswith(t.get("en", "placeholder_photo"))
    assert LANGUAGE_RULE.format(language="Dutch") in recording_server.system_text()

    mark = bot.server.mark()
    bot.server.send_text(ann, "/mydata")
    shown = await reply_after(bot, ann.id, mark)
    summary = t.get(
        "en", "mydata_summary", language="Nederlands", think="", count=0, first="", last=""
    )
    assert shown.params["text"].split("\n")[:2] == summary.split("\n")[:2]  # title, language


async def test_european_portuguese_answers_with_the_portuguese_ui(
    bot: RunningBot, recording_server: RecordingServer
) -> None:
    t = bot.services.texts
    rui = TgUser(id=7102, first_name="Rui", language_code="en")
    mark = bot.server.mark()
    bot.server.send_text(rui, "/lang pt-PT")
    reply = await reply_after(bot, rui.id, mark)
    assert reply.params["text"] == t.get("pt", "lang_set", language="Português (Portugal)")

    placeholder = await ask_about_photo(bot, rui)
    assert placeholder.startswith(t.get("pt", "placeholder_photo"))
    assert LANGUAGE_RULE.format(language="European Portuguese") in recording_server.system_text()


async def test_traditional_chinese_by_its_native_name(
    bot: RunningBot, recording_server: RecordingServer
) -> None:
    t = bot.services.texts
    mei = TgUser(id=7103, first_name="Mei", language_code="en")
    mark = bot.server.mark()
    bot.server.send_text(mei, "/lang 繁體中文")
    reply = await reply_after(bot, mei.id, mark)
    assert reply.params["text"] == t.get("zh", "lang_set", language="繁體中文")

    await ask_about_photo(bot, mei)
    assert LANGUAGE_RULE.format(language="Traditional Chinese") in recording_server.system_text()


@pytest.mark.parametrize(
    ("language_code", "ui", "native", "name"),
    [
        ("nl", "en", "Nederlands", "Dutch"),
        ("pt-br", "pt", "Português (Brasil)", "Brazilian Portuguese"),
        ("zh-hant", "zh", "繁體中文", "Traditional Chinese"),
    ],
)
async def test_a_new_users_telegram_language_picks_the_answer_language(
    bot: RunningBot, recording_server: RecordingServer, language_code, ui, native, name
) -> None:
    t = bot.services.texts
    user = TgUser(id=7104, first_name="Jo", language_code=language_code)
    mark = bot.server.mark()
    bot.server.send_text(user, "/start")
    greeting = await reply_after(bot, user.id, mark)
    assert greeting.params["text"] == t.get(ui, "start", name="Jo", language=native)

    await ask_about_photo(bot, user)
    assert LANGUAGE_RULE.format(language=name) in recording_server.system_text()
