"""Every accepted job ends delivered or failed in the running process, whatever breaks
(Telegram's 5xx, a broken engine stream), and a restart neither drops nor repeats work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.storage import Job, Storage
from tests.conftest import RunningBot, free_port
from tests.e2e.botapi_server import TgUser
from tests.e2e.test_conversation import final_answer_after

BAD_GATEWAY = {"error_code": 502, "description": "Bad Gateway", "retry_after": None}


def not_the_placeholder(bot: RunningBot, chat_id: int):
    placeholder = bot.services.texts.get("en", "placeholder_text")
    return lambda params: params["chat_id"] == chat_id and params["text"] != placeholder


@pytest.mark.settings(delivery_retry_s=0.05, max_requests_in_flight=1)
async def test_a_final_message_hit_by_5xx_is_sent_again_and_frees_the_slot(
    bot: RunningBot,
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7701, language_code="en")
    for question in ("one?", "two?", "three?", "four?"):  # one hiccup each
        server.fail_next("sendMessage", **BAD_GATEWAY, when=not_the_placeholder(bot, ann.id))
        mark = server.mark()
        server.send_text(ann, question)
        await final_answer_after(bot, ann.id, mark)
        sent = [c for c in server.calls[mark:] if c.method == "sendMessage"]
        assert [c.result.get("ok") for c in sent[:3]] == [None, False, None]  # 502, then sent
        delivered = [c.params["text"] for c in sent if c.result.get("ok") is None]
        assert len(delivered) == len(set(delivered))  # nothing twice
        assert t.get("en", "too_many_requests", limit=1) not in delivered
    assert await bot.storage.get_unfinished_jobs() == []


@pytest.mark.settings(delivery_retry_s=0.01, max_requests_in_flight=1)
async def test_an_answer_that_cannot_be_delivered_ends_failed(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7702, language_code="en")
    server.fail_next("sendMessage", **BAD_GATEWAY, times=5, when=not_the_placeholder(bot, ann.id))
    mark = server.mark()
    server.send_text(ann, "first?")
    await server.wait_for(
        lambda c: c.method == "editMessageText" and c.params["text"] == t.get("en", "error_engine"),
        after=mark,
        timeout=60,
    )
    assert await bot.storage.get_unfinished_jobs() == []
    mark = server.mark()
    server.send_text(ann, "second?")  # not refused: the first one no longer counts
    await final_answer_after(bot, ann.id, mark)


@pytest.fixture
async def broken_engine() -> AsyncIterator[str]:
    """An OpenAI-compatible server whose stream is not JSON (a proxy's error page, say)."""

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "broken"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: {not json\n\n")
        return response

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.fixture
def engine_overrides(request) -> dict:
    if "broken_engine" not in request.fixturenames:
        return {}
    url = request.getfixturevalue("broken_engine")
    return {"engine": "openai", "openai_base_urls": [url], "openai_model": "broken"}


@pytest.mark.settings(max_requests_in_flight=1)
async def test_a_broken_engine_stream_fails_the_job_not_the_user(
    broken_engine: str, bot: RunningBot
) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=7703, language_code="en")
    for question in ("one?", "two?", "three?", "four?"):
        mark = server.mark()
        server.send_text(ann, question)
        await server.wait_for(
            lambda c: c.method == "editMessageText"
            and c.params["text"] == t.get("en", "error_engine"),
            after=mark,
        )  # fmt: skip
        texts = [c.params.get("text") for c in server.calls[mark:] if c.method == "sendMessage"]
        assert t.get("en", "too_many_requests", limit=1) not in texts
        assert t.get("en", "error_generic") not in texts
    assert await bot.storage.get_unfinished_jobs() == []


# --- after a restart --------------------------------------------------------------------------

LONG_ANSWER = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(8))  # two messages


@pytest.fixture
async def unfinished(tmp_path: Path) -> list[int]:
    """Jobs a stopped bot left in its database (the `bot` fixture opens the same file):
    five follow-ups never answered, and an answer whose first message was sent."""
    async with await Storage.open(tmp_path / "bot.sqlite3") as storage:
        for user_id in range(7801, 7806):
            await storage.add_job(
                chat_id=user_id, message_id=1, user_id=user_id, chat_type="private",
                question="where is the exit?", image_file_id=None,
            )  # fmt: skip
        job = await store_answer(storage, 7806)
        await storage.set_job_parts_sent(job.id, 1, done=False)
    return list(range(7801, 7806))


async def store_answer(storage: Storage, user_id: int) -> Job:
    """A private question whose LONG_ANSWER a stopped bot stored, none of it sent."""
    job = await storage.add_job(
        chat_id=user_id, message_id=1, user_id=user_id, chat_type="private",
        question="the menu?", image_file_id=None,
    )  # fmt: skip
    await storage.start_job_attempt(job.id)
    await storage.complete_job(job, answer=LONG_ANSWER, thought="")
    return job


@pytest.mark.settings(max_queue=1, max_batch_size=1)
async def test_recovered_jobs_wait_their_turn_and_resume_delivery(
    unfinished: list[int], bot: RunningBot
) -> None:
    server, t = bot.server, bot.services.texts
    for user_id in unfinished:
        await server.wait_for(
            lambda c, uid=user_id: c.method == "deleteMessage" and c.params["chat_id"] == uid,
            timeout=120,
        )
    texts = [c.params.get("text") for c in server.calls if c.method == "sendMessage"]
    for refusal in ("error_busy", "error_engine", "error_generic"):
        assert t.get("en", refusal) not in texts
    # the half-delivered answer: only its second message is sent again
    await server.wait_for(lambda c: c.method == "sendMessage" and c.params["chat_id"] == 7806)
    await asyncio.sleep(0.3)
    resent = server.calls_to("sendMessage", 7806)
    assert len(resent) == 1 and "Paragraph 7" in resent[0].params["text"]
    assert "Paragraph 0" not in resent[0].params["text"]
    for _ in range(50):
        if not await bot.storage.get_unfinished_jobs():
            break
        await asyncio.sleep(0.1)
    assert await bot.storage.get_unfinished_jobs() == []


@pytest.fixture
async def answered_before_restart(tmp_path: Path) -> int:
    async with await Storage.open(tmp_path / "bot.sqlite3") as storage:
        await store_answer(storage, 7990)
    return 7990


@pytest.mark.settings(delivery_retry_s=1.0)
async def test_forget_stops_a_recovered_answer_being_sent_again(
    answered_before_restart: int, bot: RunningBot
) -> None:
    from tests.e2e.test_privacy import forget

    server, user_id = bot.server, answered_before_restart
    server.fail_next(
        "sendMessage", **BAD_GATEWAY, times=1,
        when=lambda p: p["chat_id"] == user_id and "Paragraph" in p["text"],
    )  # fmt: skip
    await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == user_id, timeout=60
    )  # the first try failed; the next comes in a second
    await forget(bot, TgUser(id=user_id, language_code="en"), user_id)
    await asyncio.sleep(2.0)
    sent = [c for c in server.calls_to("sendMessage", user_id) if "Paragraph" in c.params["text"]]
    assert [c.result.get("ok") for c in sent] == [False]  # never sent after "erased"


@pytest.fixture
async def two_answered_before_restart(tmp_path: Path) -> tuple[int, int]:
    async with await Storage.open(tmp_path / "bot.sqlite3") as storage:
        for user_id in (7995, 7996):
            await store_answer(storage, user_id)
    return 7995, 7996


@pytest.mark.settings(delivery_retry_s=1.0, max_queue=2)
async def test_forget_drops_a_recovered_answer_still_waiting_its_turn(
    two_answered_before_restart: tuple[int, int], bot: RunningBot
) -> None:
    from tests.e2e.test_privacy import forget

    server = bot.server
    first, waiting = two_answered_before_restart  # recovered one at a time (half the queue)
    server.fail_next(
        "sendMessage", **BAD_GATEWAY, times=2,
        when=lambda p: p["chat_id"] == first and "Paragraph" in p["text"],
    )  # fmt: skip
    await server.wait_for(
        lambda c: c.method == "sendMessage" and c.params["chat_id"] == first, timeout=60
    )
    await forget(bot, TgUser(id=waiting, language_code="en"), waiting)
    delivered = []
    for _ in range(100):  # the first answer gets through after its retries
        delivered = [
            c for c in server.calls_to("sendMessage", first)
            if "Paragraph" in c.params["text"] and c.result.get("ok") is None
        ]  # fmt: skip
        if delivered:
            break
        await asyncio.sleep(0.1)
    assert delivered
    await asyncio.sleep(2.0)
    sent = [c for c in server.calls_to("sendMessage", waiting) if "Paragraph" in c.params["text"]]
    assert sent == []
