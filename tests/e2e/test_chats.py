"""Group chats, the allowlist, and several users at once."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import TgUser


async def test_group_chat_streams_by_editing_the_placeholder(bot: RunningBot) -> None:
    server = bot.server
    ann = TgUser(id=7001, language_code="it")
    mark = server.mark()
    photo = server.send_photo(
        ann, small_photo("USCITA"), caption="@travel_test_bot", chat_id=-900, chat_type="group"
    )
    placeholder = await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == -900, after=mark
    )
    await server.wait_for(lambda c: c.method == "deleteMessage", after=mark, timeout=60)
    calls = server.calls[mark:]
    assert not [c for c in calls if c.method == "sendMessageDraft"]
    edits = [c for c in calls if c.method == "editMessageText"]
    assert edits and all(e.params["message_id"] == placeholder.result["message_id"] for e in edits)
    final = [c for c in calls if c.method == "sendMessage" and c is not placeholder]
    assert final[0].params["reply_parameters"]["message_id"] == photo["message_id"]


@pytest.mark.settings(allowed_user_ids={8001})
async def test_allowlist_refuses_others_before_anything_runs(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    stranger = TgUser(id=8002, language_code="pt")
    mark = server.mark()
    server.send_photo(stranger, small_photo())
    refused = await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    assert refused.params["text"] == t.get("pt", "not_allowed")
    await asyncio.sleep(0.3)
    assert [c.method for c in server.calls[mark:] if c.method != "getUpdates"] == ["sendMessage"]
    assert (await bot.storage.get_user_data(8002)).messages == []
    friend = TgUser(id=8001, language_code="pt")
    mark = server.mark()
    server.send_text(friend, "/start")
    welcome = await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    assert welcome.params["text"].startswith(t.get("pt", "start", name="Ann", language="x")[:5])


@pytest.mark.settings(max_new_tokens=200)
async def test_several_users_at_once_are_all_answered(bot: RunningBot) -> None:
    server = bot.server
    users = [
        TgUser(id=9000 + i, language_code=lang) for i, lang in enumerate(["de", "fr", "ja", "ar"])
    ]
    mark = server.mark()
    for user in users:
        server.send_photo(user, small_photo(f"Gate {user.id}"))
    for user in users:
        await server.wait_for(
            lambda c, uid=user.id: c.method == "deleteMessage" and c.params["chat_id"] == uid,
            after=mark,
            timeout=60,
        )
        history = await bot.storage.get_history(user.id, user.id, max_turns=3)
        assert [m.role for m in history] == ["user", "model"]
    # later arrivals were told their place in the queue, in their language
    t = bot.services.texts
    told = {
        (user.id, position)
        for user in users
        for position in range(2, len(users) + 1)
        for c in server.calls[mark:]
        if c.method in ("sendMessage", "editMessageText")
        and c.params.get("chat_id") == user.id
        and t.get(user.language_code, "queue_position", position=position) in c.params["text"]
    }
    assert len(told) >= 2, told


@pytest.mark.settings(admin_user_ids={8101})
async def test_stats_for_admins_only(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    user = TgUser(id=8102, language_code="tr")
    mark = server.mark()
    server.send_photo(user, small_photo("CIKIS"))
    await server.wait_for(lambda c: c.method == "deleteMessage", after=mark, timeout=60)
    mark = server.mark()
    server.send_text(user, "/stats")
    refused = await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    assert refused.params["text"] == t.get("tr", "unknown_command")
    admin = TgUser(id=8101, language_code="en")
    mark = server.mark()
    server.send_text(admin, "/stats")
    shown = await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    text = shown.params["text"]
    assert "answered: 1, failed: 0" in text
    assert "queue: 0 waiting, 0 running" in text
    assert "jobs: delivered 1" in text
    assert "latency p50 / p95:" in text and "– " not in text.split("latency")[1][:20]
