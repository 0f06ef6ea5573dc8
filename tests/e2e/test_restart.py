"""Kill the bot process (SIGKILL) in the middle of answering, start it again: every
accepted photo is answered exactly once, Telegram's redelivery creates no second job, and a
group reply is asked again with the text it quotes. The bot runs as a real `python -m bot`
process polling the local Bot API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from bot.i18n import Texts
from bot.settings import ROOT
from inference.openai_server import ServerConfig
from tests.conftest import OpenAIServer, RecordingServer, serving, small_photo
from tests.e2e.botapi_server import BotApiServer, TgUser, bot_process_env

USERS = [TgUser(id=11_000 + i, first_name=f"U{i}", language_code=code)
         for i, code in enumerate(["de", "fr", "ja"])]  # fmt: skip


@contextlib.contextmanager
def bot_process(
    server: BotApiServer, model_dir: Path, db: Path, log: Path, **settings: str
) -> Iterator[subprocess.Popen]:
    """`python -m bot` polling `server`; killed on the way out if it still runs."""
    defaults = {
        "max_new_tokens": "400",  # long enough to be killed mid-answer
        "max_batch_size": "4",
        "stream_interval_s": "0.3",
        "log_format": "json",
    }
    env = bot_process_env(server, model_dir, db, **(defaults | settings))
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def stop_cleanly(process: subprocess.Popen) -> None:
    """SIGTERM ends the process, with exit status 0."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


def replies(server: BotApiServer, chat_id: int, user_message_id: int, after: int = 0) -> list:
    """Bot messages replying to the user's message that are still in the chat."""
    visible = {m.message_id: m for m in server.visible_messages(chat_id)}
    return [
        visible[call.result["message_id"]]
        for call in server.calls_to("sendMessage", chat_id)[after:]
        if isinstance(call.result, dict)
        and (call.params.get("reply_parameters") or {}).get("message_id") == user_message_id
        and call.result.get("message_id") in visible
    ]


TEXTS = Texts.load(ROOT / "locales")
STATUSES = {
    TEXTS.get(user.language_code, key)
    for user in USERS
    for key in ("placeholder_photo", "placeholder_text", "placeholder_thinking")
}


def is_placeholder(text: str) -> bool:
    return any(status in text for status in STATUSES)


async def wait_for_answer(server: BotApiServer, chat_id: int, user_message_id: int) -> None:
    """Until the bot's reply to the message is there and no placeholder is left; 400
    tokens each on a busy CPU take up to 2 minutes."""
    for _ in range(1200):
        found = replies(server, chat_id, user_message_id)
        if found and not any(is_placeholder(m.text) for m in found):
            return
        await asyncio.sleep(0.1)


async def test_sigkill_mid_batch_then_restart_answers_each_photo_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = BotApiServer()
    await server.start()
    db, log = tmp_path / "bot.sqlite3", tmp_path / "bot.log"
    try:
        with bot_process(server, tiny_model_dir, db, log) as first:
            photos = {}
            for user in USERS:
                photos[user.id] = server.send_photo(user, small_photo(f"GATE {user.id}"))
            for user in USERS:  # every answer is streaming: the batch is mid-way
                await server.wait_for(
                    lambda c, uid=user.id: (
                        c.method == "sendMessageDraft" and c.params["chat_id"] == uid
                    ),
                    timeout=90,
                )
            kill(first)
        with sqlite3.connect(db) as con:
            (unfinished,) = con.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'answered')"
            ).fetchone()
        assert unfinished == len(USERS), "the kill should interrupt every answer"

        # Telegram delivers the first photo again (its update was never confirmed)
        redelivered = dict(photos[USERS[0].id])
        server.push_update({"message": redelivered})

        with bot_process(server, tiny_model_dir, db, log) as second:
            for user in USERS:
                await wait_for_answer(server, user.id, photos[user.id]["message_id"])
            await asyncio.sleep(1.5)  # time for any duplicate to show up
            for user in USERS:
                message_id = photos[user.id]["message_id"]
                found = replies(server, user.id, message_id)
                assert len(found) == 1, [(m.message_id, m.text[:60]) for m in found]
                [answer] = found  # exactly one, no stale placeholder
                assert not is_placeholder(answer.text), server.dump()
            delayed = tuple(TEXTS.get(user.language_code, "answer_delayed") for user in USERS)
            notices = [
                c for c in server.calls_to("sendMessage") if c.params["text"].startswith(delayed)
            ]
            assert len(notices) == unfinished
            with sqlite3.connect(db) as con:
                rows = con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
            assert dict(rows) == {"delivered": len(USERS)}
            stop_cleanly(second)
    finally:
        await server.stop()


class HeldServer(RecordingServer):
    """`travelbot serve` that records each chat request and holds it until `opened`."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()

    @web.middleware
    async def hold(self, request: web.Request, handler):
        if request.path == "/v1/chat/completions":
            await self.opened.wait()
        return await handler(request)


def quoted_jobs(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT status, quoted, quoted_from FROM jobs ORDER BY id").fetchall()
    con.close()
    return rows


async def test_a_reply_in_a_group_is_recovered_with_the_text_it_quotes(
    tiny_model_dir: Path, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    """Bob replies to Ann's photo; the bot is killed while his request is with the engine:
    after the restart Bob's question is asked again with Ann's caption, as before."""
    ann, bob = USERS[0], USERS[2]  # de, ja
    group, caption = -11_500, "Was ist das? ANN-CAPTION-5501"
    engine = HeldServer()
    config = ServerConfig(openai_server.model_name, openai_server.api_key)
    server = BotApiServer()
    await server.start()
    db, log = tmp_path / "bot.sqlite3", tmp_path / "bot.log"
    try:
        async with serving(openai_server.worker, config, engine.record, engine.hold) as url:
            remote = {
                "engine": "openai",
                "openai_base_urls": url,
                "openai_model": config.model_name,
                "openai_api_key": config.api_key,
                "max_new_tokens": "16",
            }
            with bot_process(server, tiny_model_dir, db, log, **remote) as first:
                photo = server.send_photo(
                    ann, small_photo("RAMEN 900"), caption=caption, chat_id=group,
                    chat_type="supergroup",
                )  # fmt: skip
                asked = server.send_text(bob, "@travel_test_bot 辛いですか？", chat_id=group,
                                         chat_type="supergroup", reply_to=photo)  # fmt: skip
                for _ in range(900):  # the process starts, then asks the engine
                    if engine.bodies:
                        break
                    await asyncio.sleep(0.1)
                assert caption in json.dumps(engine.bodies[0], ensure_ascii=False)
                kill(first)
            assert quoted_jobs(db) == [("pending", caption, ann.id)]

            engine.opened.set()
            with bot_process(server, tiny_model_dir, db, log, **remote) as second:
                await wait_for_answer(server, group, asked["message_id"])
                [answer] = replies(server, group, asked["message_id"])
                assert not is_placeholder(answer.text), server.dump()
                delayed = TEXTS.get("ja", "answer_delayed")
                sent = [c.params["text"] for c in server.calls_to("sendMessage", group)]
                assert [text for text in sent if text.startswith(delayed)] != []
                [_, recovered] = engine.bodies
                assert caption in json.dumps(recovered, ensure_ascii=False)
                assert "辛いですか" in json.dumps(recovered, ensure_ascii=False)
                for _ in range(100):  # the job is marked delivered right after the send
                    if quoted_jobs(db) == [("delivered", None, None)]:
                        break
                    await asyncio.sleep(0.1)
                assert quoted_jobs(db) == [("delivered", None, None)]  # nor Ann's words
                stop_cleanly(second)
    finally:
        await server.stop()
