"""Telegram's own failures: flood control (429 RetryAfter) and users who blocked the bot."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import TgUser


async def test_flood_control_is_retried_after_the_wait(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    user = TgUser(id=40_001, language_code="it")
    server.fail_next("sendMessage", error_code=429, retry_after=1, times=2)
    mark = server.mark()
    started = time.monotonic()
    server.send_text(user, "/help")
    reply = await server.wait_for(
        lambda c: (
            (c.method == "sendMessage" and c.result is True)
            or (
                c.method == "sendMessage"
                and isinstance(c.result, dict)
                and "message_id" in c.result
            )
        ),
        after=mark,
        timeout=20,
    )
    assert time.monotonic() - started >= 2  # waited retry_after twice
    assert reply.params["chat_id"] == user.id
    assert "/lang" in reply.params["text"] and t.get("it", "language_name") in reply.params["text"]
    refused = [
        c for c in server.calls[mark:] if c.method == "sendMessage" and c.result.get("ok") is False
    ]
    assert len(refused) == 2


async def test_a_user_who_blocked_the_bot_does_not_hurt_others(bot: RunningBot) -> None:
    server = bot.server
    gone = TgUser(id=40_002, language_code="en")
    server.block_user(gone.id)
    server.send_photo(gone, small_photo("EXIT"))
    other = TgUser(id=40_003, language_code="en")
    mark = server.mark()
    server.send_photo(other, small_photo("SORTIE"))
    await server.wait_for(
        lambda c: c.method == "deleteMessage" and c.params["chat_id"] == other.id,
        after=mark,
        timeout=60,
    )
    jobs = {job.user_id: job for job in await bot.storage.get_unfinished_jobs()}
    assert gone.id not in jobs  # failed, not left to be retried after a restart


@pytest.mark.settings(request_timeout_s=0.2, max_new_tokens=2000)
async def test_a_request_over_its_time_budget_is_cancelled_and_reported(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    user = TgUser(id=40_004, language_code="ko")
    mark = server.mark()
    server.send_text(user, "tell me everything")
    told = await server.wait_for(
        lambda c: (
            c.method == "editMessageText" and c.params["text"] == t.get("ko", "error_timeout")
        ),
        after=mark,
        timeout=20,
    )
    assert told.params["chat_id"] == user.id
    assert await bot.storage.get_unfinished_jobs() == []
    assert bot.services.worker.queue_depth == 0
    # the engine let go of it at once (it would otherwise decode 2000 tokens)
    for _ in range(40):
        if bot.services.worker.num_running == 0:
            break
        await asyncio.sleep(0.05)
    assert bot.services.worker.num_running == 0


async def test_an_update_ptb_cannot_parse_does_not_stop_polling(
    bot: RunningBot, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    """Without bot.polling, PTB would fetch the unparseable update again forever."""
    server = bot.server
    user = TgUser(id=40_004, language_code="en")
    poisoned = server.push_update({"message": {"message_id": 1, "date": 0, "chat": "MARKER"}})
    for _ in range(2):  # the second answer comes after the next getUpdates confirmed it
        mark = server.mark()
        server.send_text(user, "/help")
        await server.wait_for(
            lambda c: c.method == "sendMessage" and c.params.get("chat_id") == user.id,
            after=mark,
            timeout=20,
        )
    logged = caplog.text + "".join(capsys.readouterr())
    assert logged.count("update_unreadable") == 1, "fetched again"
    assert str(poisoned) in logged and "MARKER" not in logged
