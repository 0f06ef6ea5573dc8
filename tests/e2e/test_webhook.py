"""Webhook mode: Telegram POSTs updates to the bot, which checks the secret token header
and bounds what it reads."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.webhook import SECRET_HEADER
from tests.conftest import LOCAL_WEBHOOK, RunningBot, small_photo
from tests.e2e.botapi_server import TgUser

MIB = 1024 * 1024


def start_update(user: TgUser, update_id: int) -> dict:
    chat = {"id": user.id, "type": "private", "first_name": user.first_name}
    message = {"message_id": 1, "date": int(time.time()), "chat": chat, "from": user.to_dict()}
    message |= {"text": "/start", "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}
    return {"update_id": update_id, "message": message}


def sent_to(bot: RunningBot, chat_id: int, after: int) -> list:
    return [c for c in bot.server.calls[after:] if c.params.get("chat_id") == chat_id]


async def post(bot: RunningBot, body, *, secret: str | None, size: int | None = None) -> int:
    """POST `body` to the bot's webhook with `secret` in Telegram's header (and `size` as
    Content-Length, for a streamed body); returns the HTTP status."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    if size is not None:
        headers["Content-Length"] = str(size)
    async with (
        aiohttp.ClientSession() as http,
        http.post(bot.services.settings.webhook_url, data=body, headers=headers) as response,
    ):
        return response.status


async def streamed(size: int) -> AsyncIterator[bytes]:
    """`size` bytes sent from one 64 KiB piece, so the test's client holds no copy of them."""
    piece = b" " * 65536
    for _ in range(size // len(piece)):
        yield piece


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


@pytest.mark.settings(webhook_url=LOCAL_WEBHOOK)
async def test_huge_bodies_are_refused_without_reading_them_into_memory(bot: RunningBot) -> None:
    right = bot.services.settings.webhook_secret_token.get_secret_value()
    tracemalloc.start()  # every Python allocation of the process, the webhook server's too
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        statuses = await asyncio.gather(
            *(post(bot, streamed(50 * MIB), secret="wrong", size=50 * MIB) for _ in range(4)),
            post(bot, streamed(50 * MIB), secret=right, size=50 * MIB),  # declared too large
            post(bot, streamed(50 * MIB), secret=right),  # chunked: no length declared
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert statuses == [403, 403, 403, 403, 413, 413]
    assert peak - before < 8 * MIB, f"{(peak - before) / MIB:.1f} MiB"  # 300 MiB were posted
    # and the bot still takes updates
    ann = TgUser(id=9504)
    mark = bot.server.mark()
    assert await bot.server.post_to_webhook(start_update(ann, 90_002), secret_token=right) == 200
    await bot.server.wait_for(lambda c: c.params.get("chat_id") == ann.id, after=mark)


@pytest.mark.settings(webhook_url=LOCAL_WEBHOOK)
async def test_a_body_that_is_no_update_is_a_400_and_not_logged(
    bot: RunningBot, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    right = bot.services.settings.webhook_secret_token.get_secret_value()
    for body in (
        b'{"update_id": 1, "message": {"text": "MARKER',  # cut short
        b"\xff\xfe MARKER",  # not UTF-8
        b'["MARKER"]',
        b'{"MARKER": 1}',
        b'{"update_id": 2, "message": "MARKER"}',
        b"null",
    ):
        assert await post(bot, body, secret=right) == 400, body
    logged = caplog.text + "".join(capsys.readouterr())
    assert "webhook_bad_update" in logged and "MARKER" not in logged
