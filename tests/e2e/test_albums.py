"""Albums through the real client: a user's album (several photos or image files sent at
once, one update each with the same media_group_id) is one request with all its pages,
answered once, counted once; follow-ups see every page; bad pages are named."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.answering import prepare_image
from bot.i18n import Texts
from bot.settings import ROOT
from tests.conftest import RunningBot, small_photo
from tests.e2e.botapi_server import BotApiServer, TgUser, bot_process_env
from tests.e2e.test_bad_input import corrupt_jpeg
from tests.e2e.test_conversation import final_answer_after
from tests.e2e.test_groups import seen_requests
from tests.e2e.test_privacy import forget

pytestmark = pytest.mark.settings(album_quiet_s=0.5, max_requests_in_flight=3)


def pages(count: int) -> list[bytes]:
    return [small_photo(f"MENU PAGE {n}") for n in range(1, count + 1)]


def bot_texts(bot: RunningBot, chat_id: int, mark: int) -> list[str]:
    return [
        c.params["text"]
        for c in bot.server.calls[mark:]
        if c.method == "sendMessage" and c.params.get("chat_id") == chat_id
    ]


async def answered(bot: RunningBot, chat_id: int, mark: int) -> None:
    """The answer is final: its placeholder deleted (a notice may come before it)."""
    await bot.server.wait_for(
        lambda c: c.method == "deleteMessage" and c.params.get("chat_id") == chat_id,
        after=mark,
        timeout=60,
    )


async def settled(bot: RunningBot, seconds: float = 2.0) -> None:
    """Time for a late duplicate answer to show up, past the quiet window."""
    await asyncio.sleep(seconds)


async def test_an_album_is_one_request_with_all_pages_answered_once(bot: RunningBot) -> None:
    t = bot.services.texts
    user = TgUser(id=7001, language_code="de")
    requests = seen_requests(bot)
    mark = bot.server.mark()
    album = bot.server.send_album(user, pages(5), captions={2: "Was ist vegan?"})
    await final_answer_after(bot, user.id, mark)
    await settled(bot)
    texts = bot_texts(bot, user.id, mark)
    placeholders = [x for x in texts if x.startswith(t.get("de", "placeholder_photo"))]
    assert len(placeholders) == 1, texts  # one answer, not five
    assert not any(x.startswith(t.get("de", "too_many_requests", limit=3)[:20]) for x in texts)
    [request] = requests
    expected = [await prepare_image(bot.services, page) for page in pages(5)]
    assert request.images == tuple(expected) and request.question == "Was ist vegan?"
    [question, answer] = await bot.storage.get_history(user.id, user.id, max_turns=5)
    file_ids = tuple(m["photo"][-1]["file_id"] for m in album)
    assert question.image_file_ids == file_ids and question.text == "Was ist vegan?"
    assert answer.role == "model"
    jobs = await bot.storage.count_jobs_by_status()
    assert jobs == {"delivered": 1}

    # a follow-up sees every page of the album
    mark = bot.server.mark()
    bot.server.send_text(user, "Und welche ohne Nüsse?")
    await final_answer_after(bot, user.id, mark)
    follow_up = requests[-1]
    assert follow_up.images == () and len(follow_up.history) == 2
    assert follow_up.history[0].images == tuple(expected)

    # /mydata shows the album's turn with its number of pages
    mark = bot.server.mark()
    bot.server.send_text(user, "/mydata")
    await bot.server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    [shown] = bot_texts(bot, user.id, mark)
    assert f"{t.get('de', 'album_reference', pages=5)} Was ist vegan?" in shown

    # Telegram delivers the album's updates again: nothing is answered twice
    mark = bot.server.mark()
    for message in album:
        bot.server.push_update({"message": message})
    await settled(bot)
    assert bot_texts(bot, user.id, mark) == [] and len(requests) == 2


async def test_an_album_of_image_files_counts_the_same(bot: RunningBot) -> None:
    user = TgUser(id=7002, language_code="en")
    requests = seen_requests(bot)
    mark = bot.server.mark()
    bot.server.send_album(user, pages(3), captions={0: "Which is spicy?"}, as_files=True)
    await final_answer_after(bot, user.id, mark)
    await settled(bot)
    [request] = requests
    assert len(request.images) == 3 and request.question == "Which is spicy?"


async def test_ten_pages_with_a_corrupt_one_are_answered_and_the_page_named(
    bot: RunningBot,
) -> None:
    t = bot.services.texts
    user = TgUser(id=7003, language_code="ru")
    requests = seen_requests(bot)
    album = pages(10)
    album[3] = corrupt_jpeg()
    mark = bot.server.mark()
    bot.server.send_album(user, album)
    await answered(bot, user.id, mark)
    await settled(bot)
    notice = t.get("ru", "album_pages_unreadable", count=1, pages="4")
    assert notice in bot_texts(bot, user.id, mark)
    [request] = requests
    assert len(request.images) == 9 and request.question is None
    [question, _] = await bot.storage.get_history(user.id, user.id, max_turns=5)
    assert len(question.image_file_ids) == 9  # the unreadable page is not kept


async def test_an_album_of_only_bad_pages_is_refused_once(bot: RunningBot) -> None:
    t = bot.services.texts
    user = TgUser(id=7004, language_code="fr")
    mark = bot.server.mark()
    bot.server.send_album(user, [corrupt_jpeg(), b"not an image at all"], as_files=True)
    await bot.server.wait_for(
        lambda c: c.method == "sendMessage" and c.params.get("chat_id") == user.id, after=mark
    )
    await settled(bot)
    assert bot_texts(bot, user.id, mark) == [t.get("fr", "album_unreadable")]
    assert await bot.storage.count_jobs_by_status() == {"failed": 1}


@pytest.mark.settings(album_quiet_s=3.0)
async def test_forget_mid_collection_leaves_nothing(bot: RunningBot) -> None:
    t = bot.services.texts
    user = TgUser(id=7005, language_code="en")
    requests = seen_requests(bot)
    album = bot.server.send_album(user, pages(3), captions={0: "my secret menu"})
    for _ in range(100):  # the parts are stored
        if len(await bot.storage.get_open_album(user.id, album[0]["media_group_id"])) == 3:
            break
        await asyncio.sleep(0.05)
    mark = bot.server.mark()
    await forget(bot, user, user.id)
    await settled(bot, 4.0)  # past the album's quiet window
    assert requests == []
    placeholder = t.get("en", "placeholder_photo")
    assert not any(x.startswith(placeholder) for x in bot_texts(bot, user.id, mark))
    with sqlite3.connect(bot.services.settings.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM album_parts").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    # Telegram delivers a part again after /forget: it brings nothing back
    bot.server.push_update({"message": album[1]})
    await settled(bot)
    assert requests == [] and bot.services.albums.num_collecting == 0


async def test_a_restart_mid_collection_answers_the_album_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The process is killed (SIGKILL) while an album's parts are collected; Telegram
    delivers them again; the next process answers the album once, with every page."""
    server = BotApiServer()
    await server.start()
    db, log = tmp_path / "bot.sqlite3", tmp_path / "bot.log"
    user = TgUser(id=7006, language_code="en")

    def start(quiet_s: str) -> subprocess.Popen:
        env = bot_process_env(server, tiny_model_dir, db, album_quiet_s=quiet_s,
                              album_max_wait_s="120", max_new_tokens="8")  # fmt: skip
        return subprocess.Popen(
            [sys.executable, "-m", "bot"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    first = start("60")  # collects until it is killed
    second = None
    try:
        album = server.send_album(user, pages(3), captions={1: "Which is vegan?"})
        for _ in range(600):
            with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as con:
                if con.execute("SELECT COUNT(*) FROM album_parts").fetchone() == (3,):
                    break
            await asyncio.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        for message in album:  # their updates were never confirmed
            server.push_update({"message": message})
        mark = server.mark()
        second = start("0.5")
        await server.wait_for(
            lambda c: c.method == "deleteMessage" and c.params.get("chat_id") == user.id,
            after=mark,
            timeout=90,
        )
        await asyncio.sleep(2)  # time for a duplicate to show up
        sent = [c.params["text"] for c in server.calls_to("sendMessage", user.id)]
        placeholder = Texts.load(ROOT / "locales").get("en", "placeholder_photo")
        assert [text for text in sent if placeholder in text] == [placeholder], sent  # once
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT status FROM jobs").fetchall() == [("delivered",)]
            [(ids, question)] = con.execute(
                "SELECT image_file_ids, text FROM messages WHERE role = 'user'"
            ).fetchall()
        assert json.loads(ids) == [m["photo"][-1]["file_id"] for m in album]
        assert question == "Which is vegan?"
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
        await server.stop()


async def test_in_a_group_an_album_mentioning_the_bot_is_answered_whole(bot: RunningBot) -> None:
    """The app puts the caption, with the mention, on the first page: the later pages of
    that sender's album are meant for the bot too; an album without a mention is not."""
    chat, ann, bob = -7100, TgUser(id=7101, language_code="de"), TgUser(id=7102)
    requests = seen_requests(bot)
    mark = bot.server.mark()
    bot.server.send_album(bob, pages(2), chat_id=chat, chat_type="supergroup")
    bot.server.send_album(ann, pages(3), captions={0: "@travel_test_bot Was ist vegan?"},
                          chat_id=chat, chat_type="supergroup")  # fmt: skip
    await answered(bot, chat, mark)
    await settled(bot)
    [request] = requests
    assert len(request.images) == 3 and request.question == "Was ist vegan?"
    placeholder = bot.services.texts.get("de", "placeholder_photo")
    assert len([x for x in bot_texts(bot, chat, mark) if x.startswith(placeholder)]) == 1
    with sqlite3.connect(bot.services.settings.database_path) as db:
        assert db.execute("SELECT DISTINCT user_id FROM album_parts").fetchall() == [(ann.id,)]


async def test_an_album_whose_caption_is_too_long_is_refused_whole_once(bot: RunningBot) -> None:
    """As a single photo's: told once, nothing asked; not answered without that page."""
    t = bot.services.texts
    user = TgUser(id=7008, language_code="fr")
    requests = seen_requests(bot)
    caption = "Quoi ? " * 200 + "?"
    mark = bot.server.mark()
    bot.server.send_album(user, pages(3), captions={0: caption})
    await bot.server.wait_for(
        lambda c: c.method == "sendMessage" and c.params.get("chat_id") == user.id, after=mark
    )
    await settled(bot)
    assert bot_texts(bot, user.id, mark) == [
        t.get("fr", "question_too_long", length=len(caption), limit=1000)
    ]
    assert requests == []
    assert await bot.storage.count_jobs_by_status() == {"failed": 1}
    assert await bot.storage.get_open_albums() == []


async def test_thirty_photos_chosen_at_once_are_three_whole_albums(bot: RunningBot) -> None:
    """The app sends them as three albums of 10, 30 updates at once: none is taken for a
    flood (bot/update_budget.py)."""
    user = TgUser(id=7009, language_code="en")
    requests = seen_requests(bot)
    for _ in range(3):
        bot.server.send_album(user, pages(10))
    for _ in range(600):
        if len(requests) == 3:
            break
        await asyncio.sleep(0.1)
    assert sorted(len(r.images) for r in requests) == [10, 10, 10]
