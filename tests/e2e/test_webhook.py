"""Webhook mode: Telegram POSTs updates to the bot, which checks the secret token header."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import LOCAL_WEBHOOK, RunningBot, small_photo
from tests.e2e.botapi_server import TgUser


def start_update(user: TgUser, update_id: int) -> dict:
    chat = {"id": user.id, "type": "private", "first_name": user.first_name}
    message = {"message_id": 1, "date": int(time.time()), "chat": chat, "from": user.to_dict()}
    message |= {"text": "/start", "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}
    return {"update_id": update_id, "message": message}


def sent_to(bot: RunningBot, chat_id: int, after: int) -> list:
    return [c for c in bot.server.calls[after:] if c.params.get("chat_id") == chat_id]


@pytest.mark.settings(webhook_url=LOCAL_WEBHOOK)
async def test_start_and_photo_are_answered_through_the_webhook(bot: RunningBot) -> None:
    server, settings, t = bot.server, bot.services.settings, bot.services.texts
    assert server.webhook_url == settings.webhook_url
    assert server.webhook_secret_token == settings.webhook_secret_token.get_secret_value()
    assert not server.calls_to("getUpdates")  # nothing polls
    ann = TgUser(id=9501, language_code="de")
    mark = server.mark()
    server.send_text(ann, "/start")
    welcome = await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == ann.id, after=mark
    )
    assert welcome.params["text"].startswith(t.get("de", "start", name="Ann", language="x")[:5])
    server.send_photo(ann, small_photo("AUSGANG"))
    await server.wait_for(lambda c: c.method == "deleteMessage", after=mark, timeout=60)
    history = await bot.storage.get_history(ann.id, ann.id, max_turns=3)
    assert [m.role for m in history] == ["user", "model"]
    assert server.webhook_statuses == [200, 200]


@pytest.mark.settings(webhook_url=LOCAL_WEBHOOK)
async def test_webhook_refuses_updates_without_the_right_secret(bot: RunningBot) -> None:
    server = bot.server
    bob = TgUser(id=9502)
    update = start_update(bob, update_id=90_001)
    mark = server.mark()
    assert await server.post_to_webhook(update, secret_token="wrong-secret") == 403
    assert await server.post_to_webhook(update, secret_token=None) == 403
    await asyncio.sleep(0.5)
    assert sent_to(bot, bob.id, mark) == []
    assert await bot.storage.get_user(bob.id) is None
    # the same update with Telegram's secret is answered: the refusals were about the header
    assert await server.post_to_webhook(update, secret_token=server.webhook_secret_token) == 200
    await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == bob.id, after=mark
    )


async def test_polling_stays_the_default(bot: RunningBot) -> None:
    server = bot.server
    assert bot.services.settings.webhook_url is None
    mark = server.mark()
    server.send_text(TgUser(id=9503), "/start")
    await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    assert server.webhook_url is None and not server.calls_to("setWebhook")
    assert server.webhook_statuses == []
