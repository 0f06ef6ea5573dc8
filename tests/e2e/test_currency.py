"""/currency end to end through the real PTB client: the prices come from SCRIPTED model
outputs (an OpenAI-compatible endpoint streaming a fixed answer, reached through the real
RemoteWorker), the rates from a local server of the ECB's daily file; the conversion is the
bot's own code."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import FeedServer, RunningBot, ScriptedChatServer, small_photo
from tests.e2e.botapi_server import TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after

SCRIPTED_MENU = (
    "**ラーメン** (ramen) and **ビール** (beer).\n\n```json\n"
    + json.dumps(
        {
            "prices": [
                {"item": "Ramen", "amount": 1600, "currency": "JPY"},
                {"item": "Thai tea", "amount": 50, "currency": "THB"},
            ]
        }
    )
    + "\n```"
)


@pytest.fixture
def engine_overrides(scripted_server: ScriptedChatServer, feed: FeedServer) -> dict:
    return scripted_server.engine_settings() | {"reference_rates_url": feed.url}


async def say(bot: RunningBot, user: TgUser, text: str) -> str:
    mark = bot.server.mark()
    bot.server.send_text(user, text)
    return (await reply_after(bot, user.id, mark)).params["text"]


async def menu_answer(bot: RunningBot, scripted: ScriptedChatServer, user: TgUser) -> str:
    """The final answer to a photo whose SCRIPTED answer lists two prices."""
    scripted.script(SCRIPTED_MENU)
    mark = bot.server.mark()
    bot.server.send_photo(user, small_photo("MENU"))
    await final_answer_after(bot, user.id, mark)
    sent = [c for c in bot.server.calls_to("sendMessage", user.id) if c in bot.server.calls[mark:]]
    return "\n".join(c.params["text"] for c in sent[1:])


async def test_prices_are_converted_with_the_ecb_rates_and_the_users_own(
    bot: RunningBot, scripted_server: ScriptedChatServer, feed: FeedServer
) -> None:
    t = bot.services.texts
    ann = TgUser(id=8501, language_code="en")

    assert await say(bot, ann, "/currency") == t.get("en", "currency_usage")
    assert await say(bot, ann, "/currency JPY 0.006") == t.get("en", "currency_need_home")
    assert await say(bot, ann, "/currency XYZ") == t.get("en", "currency_unknown", code="XYZ")
    long = "/currency " + "<b>" * 50
    assert await say(bot, ann, long) == t.get(
        "en",
        "currency_unknown",
        code="&lt;b&gt;" * 4,  # the first 12 characters, escaped
    )
    assert await say(bot, ann, "/currency eur") == t.get(
        "en", "currency_set", code="EUR", name="Euro"
    )

    answer = await menu_answer(bot, scripted_server, ann)
    assert "ラーメン" in answer and "```" not in answer
    assert t.get("en", "prices_heading", code="EUR") in answer
    assert "Ramen: ¥1,600 ≈ €10.00" in answer  # 1600 / 160 per euro
    assert "Thai tea: THB50.00 ≈ ?" in answer
    assert t.get("en", "price_no_rate", code="THB") in answer
    assert t.get("en", "prices_source_ecb", date="2026-12-04") in answer
    assert len(feed.requests) == 1

    for bad in ("/currency THB -1", "/currency THB lots", "/currency EUR 2", "/currency THB inf"):
        assert await say(bot, ann, bad) == t.get("en", "currency_rate_invalid"), bad
    assert await say(bot, ann, "/currency thb 0,025") == t.get(
        "en", "currency_rate_set", code="THB", rate="0.025", home="EUR"
    )
    answer = await menu_answer(bot, scripted_server, ann)
    assert "Thai tea: THB50.00 ≈ €1.25" in answer
    assert t.get("en", "prices_source_own") in answer
    assert len(feed.requests) == 1  # the rates are kept for a day

    mydata = await say(bot, ann, "/mydata")
    assert t.get("en", "mydata_currency", code="EUR", rates="1 THB = 0.025") in mydata
    await bot.services.erase_user(ann.id)
    assert (await bot.storage.get_currency(ann.id)).code is None


async def test_without_a_currency_the_bot_asks_for_it_once(
    bot: RunningBot, scripted_server: ScriptedChatServer
) -> None:
    t = bot.services.texts
    bea = TgUser(id=8601, language_code="de")
    ask = t.get("de", "currency_ask")
    first = await menu_answer(bot, scripted_server, bea)
    assert ask in first and "≈" not in first
    second = await menu_answer(bot, scripted_server, bea)
    assert ask not in second and "≈" not in second


@pytest.mark.settings(reference_rates_timeout_s=1.0)
async def test_a_feed_that_trickles_is_given_up_within_its_timeout(
    bot: RunningBot, scripted_server: ScriptedChatServer, feed: FeedServer
) -> None:
    """A byte every 0.2 s never lets one read wait 1 s, but the whole file would take
    minutes: every answer with a price waited that long for it, the sender's next ones too."""
    feed.trickle_s = 0.2
    t = bot.services.texts
    cai = TgUser(id=8701, language_code="en")
    await say(bot, cai, "/currency EUR")
    started = time.monotonic()
    answer = await menu_answer(bot, scripted_server, cai)
    assert time.monotonic() - started < 15
    assert "Ramen: ¥1,600 ≈ ?" in answer
    assert t.get("en", "price_no_rate", code="JPY") in answer
    assert len(feed.requests) == 1
