"""Kill the bot process (SIGKILL) in the middle of answering, start it again: every
accepted photo is answered exactly once, and Telegram's redelivery creates no second job.
The bot runs as a real `python -m bot` process polling the local Bot API server."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.i18n import Texts
from bot.settings import ROOT
from tests.conftest import small_photo
from tests.e2e.botapi_server import BotApiServer, TgUser, bot_process_env

USERS = [TgUser(id=11_000 + i, first_name=f"U{i}", language_code=code)
         for i, code in enumerate(["de", "fr", "ja"])]  # fmt: skip


def start_bot(server: BotApiServer, model_dir: Path, db: Path, log: Path) -> subprocess.Popen:
    env = bot_process_env(
        server,
        model_dir,
        db,
        max_new_tokens="400",  # long enough to be killed mid-answer
        max_batch_size="4",
        stream_interval_s="0.3",
        log_format="json",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bot"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


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


async def test_sigkill_mid_batch_then_restart_answers_each_photo_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    server = BotApiServer()
    await server.start()
    db, log = tmp_path / "bot.sqlite3", tmp_path / "bot.log"
    first = start_bot(server, tiny_model_dir, db, log)
    try:
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
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        with sqlite3.connect(db) as con:
            (unfinished,) = con.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'answered')"
            ).fetchone()
        assert unfinished == len(USERS), "the kill should interrupt every answer"

        # Telegram delivers the first photo again (its update was never confirmed)
        redelivered = dict(photos[USERS[0].id])
        server.push_update({"message": redelivered})

        second = start_bot(server, tiny_model_dir, db, log)
        try:
            for user in USERS:
                message_id = photos[user.id]["message_id"]
                for _ in range(300):
                    found = replies(server, user.id, message_id)
                    if found and not any(is_placeholder(m.text) for m in found):
                        break
                    await asyncio.sleep(0.1)
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
            # graceful stop: SIGTERM ends the process cleanly
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
        await server.stop()
