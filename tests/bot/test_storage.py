"""Tests for bot.storage against a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import pytest

from bot import storage as storage_mod
from bot.storage import MIGRATIONS, Reply, Storage, TooManyJobs, schema
from bot.storage.jobs import AnsweredPhoto
from inference import Diet

ALICE = 424_242_424_242  # large ids cannot collide with row ids / sequence counters
BOB = 737_373_737_373


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "bot.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Storage]:
    s = await Storage.open(db_path)
    yield s
    await s.close()


def raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Run a query with plain sqlite3 (a separate connection)."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def rows_mentioning(path: Path, user_id: int) -> list[tuple[str, tuple]]:
    """Every row, in every table of the file, holding `user_id` in any column."""
    found = []
    for (table,) in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in raw(path, f'SELECT * FROM "{table}"'):
            if any(v == user_id or (isinstance(v, str) and str(user_id) in v) for v in row):
                found.append((table, row))
    return found


async def add_turns(s: Storage, user_id: int, n: int, prefix: str = "") -> None:
    for i in range(1, n + 1):
        await s.add_message(user_id, user_id, "user", f"{prefix}q{i}")
        await s.add_message(user_id, user_id, "model", f"{prefix}a{i}")


# --- schema and migrations -------------------------------------------------


async def test_open_creates_file_schema_and_wal(db_path: Path) -> None:
    async with await Storage.open(db_path) as s:
        assert db_path.is_file()
        assert s.schema_version == len(MIGRATIONS) == 15
        names = {n for (n,) in raw(db_path, "SELECT name FROM sqlite_master")}
        assert {"users", "messages", "messages_chat_user", "jobs", "jobs_status"} <= names
        assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
        assert raw(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
        assert await s.count_users() == 0


async def test_reopen_is_idempotent_and_keeps_data(db_path: Path) -> None:
    async with await Storage.open(db_path) as s:
        await s.set_language(ALICE, "de")
        await s.add_message(ALICE, ALICE, "user", "hallo", image_file_id="F1")
    schema_before = raw(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")

    async with await Storage.open(db_path) as s:
        assert s.schema_version == len(MIGRATIONS)
        assert (await s.get_user(ALICE)).language == "de"
        [msg] = (await s.get_user_data(ALICE)).messages
        assert (msg.role, msg.text, msg.image_file_id) == ("user", "hallo", "F1")
    assert raw(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema_before


async def test_old_database_gets_only_missing_migrations(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A version-1 database built by hand, with one user in it.
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    for sql in MIGRATIONS[0]:
        con.execute(sql)
    con.execute(
        "INSERT INTO users VALUES (?, 'fr', 1, '2024-01-01T00:00:00+00:00', "
        "'2024-01-01T00:00:00+00:00')",
        (ALICE,),
    )
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()

    # ALTER TABLE fails if applied twice, so reopening also proves idempotence.
    extra = ["ALTER TABLE users ADD COLUMN nickname TEXT"]
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, extra])
    latest = len(MIGRATIONS) + 1
    for _ in range(2):
        async with await Storage.open(db_path) as s:
            assert s.schema_version == latest
            user = await s.get_user(ALICE)
            assert (user.language, user.think, user.created_at.year) == ("fr", True, 2024)
    assert raw(db_path, "PRAGMA user_version") == [(latest,)]
    assert "nickname" in {row[1] for row in raw(db_path, "PRAGMA table_info(users)")}
    assert raw(db_path, "SELECT name FROM sqlite_master WHERE name = 'jobs'") == [("jobs",)]


async def test_failed_migration_is_rolled_back(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Storage.open(db_path):
        pass
    bad = ["CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"]
    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, bad])
    with pytest.raises(sqlite3.OperationalError):
        await Storage.open(db_path)
    assert raw(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert raw(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


async def test_newer_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    raw(db_path, "PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer"):
        await Storage.open(db_path)
    assert raw(db_path, "PRAGMA user_version") == [(99,)]


def schema_of(path: Path) -> list[tuple]:
    return raw(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
async def test_a_database_of_every_shipped_version_migrates_to_the_fresh_schema(
    tmp_path: Path, version: int
) -> None:
    """A database left at `version` by an older bot (its migrations, applied by plain sqlite3)
    ends with exactly the schema a new database gets, and keeps its users."""
    fresh, old = tmp_path / "fresh.sqlite3", tmp_path / "old.sqlite3"
    async with await Storage.open(fresh):
        pass
    with sqlite3.connect(old) as con:
        for sql in [sql for migration in MIGRATIONS[:version] for sql in migration]:
            con.execute(sql)
        con.execute(
            "INSERT INTO users (user_id, language, think, created_at, updated_at)"
            " VALUES (?, 'fr', 1, '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
            (ALICE,),
        )
        con.execute(f"PRAGMA user_version = {version}")
    con.close()
    async with await Storage.open(old) as s:
        assert s.schema_version == len(MIGRATIONS)
        user = await s.get_user(ALICE)
        assert (user.language, user.think, await s.get_diet(ALICE)) == ("fr", True, Diet())
        assert await s.get_unfinished_jobs() == []
    assert schema_of(old) == schema_of(fresh)


# --- users -----------------------------------------------------------------


async def test_get_or_create_user_reports_created(store: Storage) -> None:
    assert await store.get_user(ALICE) is None
    user, created = await store.get_or_create_user(ALICE, default_language="de")
    assert created is True
    assert (user.user_id, user.language, user.think) == (ALICE, "de", False)
    assert user.created_at.tzinfo is not None and user.created_at.utcoffset() == UTC.utcoffset(None)

    again, created = await store.get_or_create_user(ALICE, default_language="ja")
    assert created is False
    assert again == user  # language not overwritten by the new default
    assert await store.count_users() == 1


async def test_settings_create_missing_users_with_defaults(store: Storage) -> None:
    user = await store.set_language(ALICE, "ja")
    assert (user.language, user.think) == ("ja", False)
    user = await store.set_think(BOB, True)
    assert (user.language, user.think) == ("en", True)
    assert await store.count_users() == 2


async def test_settings_persist_across_reopen(db_path: Path) -> None:
    async with await Storage.open(db_path) as s:
        first, _ = await s.get_or_create_user(ALICE, default_language="en")
        await s.set_language(ALICE, "de")
        updated = await s.set_think(ALICE, True)
        assert (updated.language, updated.think) == ("de", True)
        assert updated.created_at == first.created_at
        assert updated.updated_at >= first.updated_at
    async with await Storage.open(db_path) as s:
        assert await s.get_user(ALICE) == updated
        assert (await s.set_think(ALICE, False)).think is False
    async with await Storage.open(db_path) as s:
        assert (await s.get_user(ALICE)).think is False


# --- messages --------------------------------------------------------------


async def test_add_message_validates_role(store: Storage, db_path: Path) -> None:
    with pytest.raises(ValueError, match="role"):
        await store.add_message(ALICE, ALICE, "assistant", "hi")
    msg = await store.add_message(ALICE, ALICE, "model", "ok")
    assert (msg.user_id, msg.role, msg.text, msg.image_file_id) == (ALICE, "model", "ok", None)
    assert msg.created_at.tzinfo is not None
    assert raw(db_path, "SELECT role, text FROM messages") == [("model", "ok")]
    assert await store.get_user(ALICE) is None  # add_message creates no user row


async def test_history_is_trimmed_by_turns(store: Storage) -> None:
    await add_turns(store, ALICE, 5)
    history = await store.get_history(ALICE, ALICE, max_turns=2)
    assert [(m.role, m.text) for m in history] == [
        ("user", "q4"),
        ("model", "a4"),
        ("user", "q5"),
        ("model", "a5"),
    ]
    assert len(await store.get_history(ALICE, ALICE, max_turns=10)) == 10
    assert await store.get_history(ALICE, ALICE, max_turns=0) == []
    assert await store.get_history(ALICE, ALICE, max_turns=-1) == []
    assert await store.get_history(BOB, BOB, max_turns=3) == []


async def test_history_turn_groups_several_model_messages(store: Storage) -> None:
    await store.add_message(ALICE, ALICE, "model", "orphan")
    await store.add_message(ALICE, ALICE, "user", "q1", image_file_id="P1")
    await store.add_message(ALICE, ALICE, "model", "a1-part1")
    await store.add_message(ALICE, ALICE, "model", "a1-part2")
    await store.add_message(ALICE, ALICE, "user", "q2")  # not answered yet

    assert [m.text for m in await store.get_history(ALICE, ALICE, max_turns=1)] == ["q2"]
    two = await store.get_history(ALICE, ALICE, max_turns=2)
    assert [m.text for m in two] == ["q1", "a1-part1", "a1-part2", "q2"]
    assert two[0].image_file_id == "P1"
    everything = await store.get_history(ALICE, ALICE, max_turns=50)
    assert everything == two  # leading orphan model message dropped


async def test_per_user_cap_deletes_oldest_rows_only(db_path: Path) -> None:
    async with await Storage.open(db_path, max_stored_messages=5) as s:
        await add_turns(s, BOB, 2, prefix="bob-")
        await add_turns(s, ALICE, 4)  # 8 messages, cap 5
        texts = [m.text for m in (await s.get_user_data(ALICE)).messages]
        assert texts == ["a2", "q3", "a3", "q4", "a4"]
        # The cut left a model message first; history still starts with a user turn.
        assert [m.text for m in await s.get_history(ALICE, ALICE, max_turns=9)] == texts[1:]
        bob = [m.text for m in (await s.get_user_data(BOB)).messages]
        assert bob == ["bob-q1", "bob-a1", "bob-q2", "bob-a2"]
    assert raw(db_path, "SELECT COUNT(*) FROM messages WHERE user_id = ?", (ALICE,)) == [(5,)]
    assert raw(db_path, "SELECT COUNT(*) FROM messages WHERE text IN ('q1','a1','q2')") == [(0,)]


async def test_max_stored_messages_must_be_positive(db_path: Path) -> None:
    with pytest.raises(ValueError):
        await Storage.open(db_path, max_stored_messages=0)


async def test_last_image_file_id(store: Storage) -> None:
    assert await store.get_last_image_file_id(ALICE, ALICE) is None
    await store.add_message(ALICE, ALICE, "user", "what is this?", image_file_id="PHOTO-1")
    await store.add_message(ALICE, ALICE, "model", "a menu")
    await store.add_message(ALICE, ALICE, "user", "and this?", image_file_id="PHOTO-2")
    await store.add_message(ALICE, ALICE, "user", "translate it")  # text-only follow-up
    await store.add_message(BOB, BOB, "user", "mine", image_file_id="BOB-PHOTO")
    assert await store.get_last_image_file_id(ALICE, ALICE) == "PHOTO-2"
    assert await store.get_last_image_file_id(BOB, BOB) == "BOB-PHOTO"


async def test_concurrent_writes_do_not_collide(store: Storage) -> None:
    await asyncio.gather(
        *(store.add_message(ALICE, ALICE, "user", f"m{i}") for i in range(30)),
        *(store.set_think(ALICE, i % 2 == 0) for i in range(10)),
        store.delete_user_data(BOB),
    )
    data = await store.get_user_data(ALICE)
    assert sorted(m.text for m in data.messages) == sorted(f"m{i}" for i in range(30))
    assert data.user is not None


# --- /mydata and erase -----------------------------------------------------


async def test_get_user_data_lists_everything(store: Storage) -> None:
    assert await store.get_user_data(ALICE) == storage_mod.UserData(user=None, messages=[])
    await store.set_language(ALICE, "it")
    await store.add_message(ALICE, ALICE, "user", "menu?", image_file_id="F-1")
    await store.add_message(ALICE, ALICE, "model", "pasta")
    await store.add_message(BOB, BOB, "user", "not alice")
    data = await store.get_user_data(ALICE)
    assert data.user == await store.get_user(ALICE)
    assert data.user.language == "it"
    assert [(m.role, m.text, m.image_file_id) for m in data.messages] == [
        ("user", "menu?", "F-1"),
        ("model", "pasta", None),
    ]
    assert {m.user_id for m in data.messages} == {ALICE}
    assert data.messages[0].id < data.messages[1].id


async def test_delete_user_data_really_deletes(db_path: Path) -> None:
    secret = "SECRET-PASSPORT-NUMBER-X91"
    async with await Storage.open(db_path) as s:
        await s.set_language(ALICE, "de")
        await add_turns(s, ALICE, 2)
        await s.add_message(ALICE, ALICE, "user", secret, image_file_id="ALICE-PHOTO")
        await s.set_think(BOB, True)
        await s.add_message(BOB, BOB, "user", "bob stays")
        assert rows_mentioning(db_path, ALICE)  # the scan does see Alice before

        assert await s.delete_user_data(ALICE) == 1 + 5
        assert rows_mentioning(db_path, ALICE) == []
        assert await s.get_user_data(ALICE) == storage_mod.UserData(user=None, messages=[])
        assert await s.get_last_image_file_id(ALICE, ALICE) is None
        assert await s.delete_user_data(ALICE) == 0

        assert (await s.get_user(BOB)).think is True
        assert [m.text for m in (await s.get_user_data(BOB)).messages] == ["bob stays"]
        assert await s.count_users() == 1

    assert len(rows_mentioning(db_path, BOB)) == 2
    # secure_delete: the erased text is not left behind in free pages of the file.
    leftovers = [p.name for p in db_path.parent.iterdir() if secret.encode() in p.read_bytes()]
    assert leftovers == []


# --- jobs ------------------------------------------------------------------------------------


async def test_job_lifecycle_and_redelivery(store: Storage) -> None:
    job = await store.add_job(
        chat_id=ALICE, message_id=7, user_id=ALICE, chat_type="private",
        question="no pork?", image_file_id="F9", language="de",
    )  # fmt: skip
    assert job is not None and job.status == "pending" and job.attempts == 0
    assert (await store.get_user(ALICE)).language == "de"  # first contact stores the user
    again = await store.add_job(
        chat_id=ALICE, message_id=7, user_id=ALICE, chat_type="private",
        question="no pork?", image_file_id="F9",
    )  # fmt: skip
    assert again is None  # Telegram redelivered the same message
    assert [j.id for j in await store.get_unfinished_jobs()] == [job.id]
    assert await store.start_job_attempt(job.id) == 1
    stored = await store.complete_job(job, answer="The trout.", thought="menu")
    answered = await store.get_job(job.id)
    assert (answered.status, answered.answer, answered.attempts) == ("answered", "The trout.", 1)
    assert answered.answer_history_id == stored.id
    assert await store.get_message(stored.id) == stored
    assert (stored.role, stored.text, stored.user_id) == ("model", "The trout.", ALICE)
    history = await store.get_history(ALICE, ALICE, max_turns=5)
    assert [(m.role, m.text, m.image_file_id) for m in history] == [
        ("user", "no pork?", "F9"),
        ("model", "The trout.", None),
    ]
    await store.set_job_status(job.id, "delivered")
    delivered = await store.get_job(job.id)
    assert (delivered.status, delivered.answer) == ("delivered", None)
    assert await store.get_unfinished_jobs() == []


async def test_forget_deletes_jobs_too(store: Storage, db_path: Path) -> None:
    await store.add_job(chat_id=ALICE, message_id=1, user_id=ALICE, chat_type="private",
                        question=None, image_file_id="F1")  # fmt: skip
    await store.add_job(chat_id=BOB, message_id=1, user_id=BOB, chat_type="private",
                        question="hi", image_file_id=None)  # fmt: skip
    assert await store.delete_user_data(ALICE) == 2  # the job and the user row it created
    assert raw(db_path, "SELECT user_id FROM jobs") == [(BOB,)]


async def test_unfinished_job_limit_is_checked_atomically(store: Storage) -> None:
    from bot.storage import TooManyJobs

    async def add(message_id: int):
        return await store.add_job(chat_id=BOB, message_id=message_id, user_id=BOB,
                                   chat_type="private", question="q", image_file_id=None,
                                   max_unfinished=2)  # fmt: skip

    results = await asyncio.gather(*(add(i) for i in range(5)), return_exceptions=True)
    assert sum(isinstance(r, TooManyJobs) for r in results) == 3
    assert len(await store.get_unfinished_jobs()) == 2


async def test_retention_deletes_only_old_history_and_finished_jobs(
    store: Storage, db_path: Path
) -> None:
    await store.add_message(ALICE, ALICE, "user", "old")
    await store.add_message(ALICE, ALICE, "user", "new")
    done = await store.add_job(chat_id=ALICE, message_id=1, user_id=ALICE, chat_type="private",
                               question="q", image_file_id=None)  # fmt: skip
    await store.set_job_status(done.id, "delivered")
    await store.add_job(chat_id=ALICE, message_id=2, user_id=ALICE, chat_type="private",
                        question="q", image_file_id=None)  # fmt: skip
    long_ago = "2020-01-01T00:00:00+00:00"
    con = sqlite3.connect(db_path)
    with con:  # commits
        con.execute("UPDATE messages SET created_at = ? WHERE text = 'old'", (long_ago,))
        con.execute("UPDATE jobs SET updated_at = ?", (long_ago,))
    con.close()
    assert await store.delete_older_than(30) == 2  # the old message and the delivered job
    assert [m.text for m in (await store.get_user_data(ALICE)).messages] == ["new"]
    assert len(await store.get_unfinished_jobs()) == 1  # pending work is never dropped


# --- privacy: per chat, /forget at every instant, files ----------------------------------------

GROUP = -100_555


async def test_history_and_last_photo_are_kept_per_chat_and_member(store: Storage) -> None:
    await store.add_message(ALICE, ALICE, "user", "my private passport", image_file_id="PRIV")
    await store.add_message(GROUP, ALICE, "user", "alice in the group", image_file_id="GRP-A")
    await store.add_message(GROUP, BOB, "user", "bob in the group")
    assert [m.text for m in await store.get_history(GROUP, ALICE, max_turns=5)] == [
        "alice in the group"
    ]
    assert [m.text for m in await store.get_history(GROUP, BOB, max_turns=5)] == [
        "bob in the group"
    ]
    assert [m.text for m in await store.get_history(ALICE, ALICE, max_turns=5)] == [
        "my private passport"
    ]
    assert await store.get_last_image_file_id(GROUP, ALICE) == "GRP-A"
    assert await store.get_last_image_file_id(GROUP, BOB) is None
    assert await store.get_last_image_file_id(ALICE, ALICE) == "PRIV"
    # /mydata and /forget cover the user's words in every chat
    assert {m.chat_id for m in (await store.get_user_data(ALICE)).messages} == {ALICE, GROUP}
    assert await store.delete_user_data(ALICE) == 2
    assert [m.text for m in await store.get_history(GROUP, BOB, max_turns=5)] == [
        "bob in the group"
    ]


async def test_an_answer_in_a_group_leads_to_its_photo_until_erased(store: Storage) -> None:
    job = await store.add_job(chat_id=GROUP, message_id=10, user_id=ALICE, chat_type="group",
                              question=None, image_file_id="MENU")  # fmt: skip
    await store.complete_job(job, answer="a long answer", thought="")
    await store.set_job_parts_sent(job.id, 1, done=False, answer_message_id=11)
    await store.set_job_parts_sent(job.id, 2, done=True, answer_message_id=13)
    menu = AnsweredPhoto("MENU", asker=ALICE, sender=ALICE)
    assert [await store.get_answered_photo(GROUP, m) for m in (10, 11, 12, 13)] == [
        None, menu, None, menu
    ]  # fmt: skip
    assert await store.get_answered_photo(ALICE, 11) is None  # another chat's message 11
    assert (await store.get_job(job.id)).status == "delivered"
    await store.delete_user_data(ALICE)
    assert await store.get_answered_photo(GROUP, 11) is None


async def test_history_from_before_chats_were_told_apart_goes_to_the_private_chat(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    for sql in MIGRATIONS[0] + MIGRATIONS[1]:
        con.execute(sql)
    con.execute(
        "INSERT INTO messages (user_id, role, text, created_at) VALUES (?, 'user', 'old', ?)",
        (ALICE, "2026-01-01T00:00:00+00:00"),
    )
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    async with await Storage.open(db_path) as s:
        assert [m.text for m in await s.get_history(ALICE, ALICE, max_turns=3)] == ["old"]
        assert await s.get_history(GROUP, ALICE, max_turns=3) == []


def files_holding(directory: Path, text: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if text.encode() in p.read_bytes())


async def test_forget_leaves_no_copy_in_the_wal_while_the_bot_runs(db_path: Path) -> None:
    secret = "ERASE-ME-CAPTION-7731"
    async with await Storage.open(db_path) as s:
        for i in range(5):  # many page images of the message in the WAL
            await s.add_message(ALICE, ALICE, "user", f"{secret} {i}")
            await s.add_message(ALICE, ALICE, "model", "an answer")
        job = await s.add_job(chat_id=ALICE, message_id=1, user_id=ALICE, chat_type="private",
                              question=secret, image_file_id=None)  # fmt: skip
        await s.add_message(BOB, BOB, "user", "bob stays")
        assert files_holding(db_path.parent, secret)  # the scan sees it before
        await s.delete_user_data(ALICE)
        assert files_holding(db_path.parent, secret) == []  # database, -wal and -shm
        assert await s.get_job(job.id) is None
        assert [m.text for m in (await s.get_user_data(BOB)).messages] == ["bob stays"]


async def test_database_files_are_private_to_the_bot(db_path: Path) -> None:
    old_umask = os.umask(0o022)  # what a Docker image without a umask runs with
    try:
        async with await Storage.open(db_path) as s:
            await s.add_message(ALICE, ALICE, "user", "hello")
            files = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            assert all(f.exists() for f in files)
            assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
            assert oct(db_path.parent.stat().st_mode & 0o777) == "0o700"
        db_path.chmod(0o644)  # a database made by an older version
        async with await Storage.open(db_path):
            assert oct(db_path.stat().st_mode & 0o777) == "0o600"
    finally:
        os.umask(old_umask)


async def test_a_job_erased_while_it_runs_stores_nothing(store: Storage) -> None:
    job = await store.add_job(chat_id=ALICE, message_id=3, user_id=ALICE, chat_type="private",
                              question="no pork?", image_file_id="F1")  # fmt: skip
    assert await store.start_job_attempt(job.id) == 1
    await store.delete_user_data(ALICE)  # /forget while the answer is written
    assert await store.complete_job(job, answer="The trout.", thought="") is None
    assert await store.get_user_data(ALICE) == storage_mod.UserData(user=None, messages=[])
    assert await store.start_job_attempt(job.id) is None
    await store.set_job_placeholder(job.id, 5)  # no error, no row
    assert await store.get_job(job.id) is None


async def test_parts_sent_are_recorded_and_the_last_delivers(store: Storage) -> None:
    job = await store.add_job(chat_id=ALICE, message_id=4, user_id=ALICE, chat_type="private",
                              question="q", image_file_id=None)  # fmt: skip
    await store.complete_job(job, answer="long", thought="")
    await store.set_job_parts_sent(job.id, 1, done=False)
    partly = await store.get_job(job.id)
    assert (partly.status, partly.parts_sent, partly.answer) == ("answered", 1, "long")
    await store.set_job_parts_sent(job.id, 2, done=True)
    done = await store.get_job(job.id)
    assert (done.status, done.parts_sent, done.answer) == ("delivered", 2, None)


async def test_a_cancelled_begin_does_not_leave_the_connection_in_a_transaction(
    db_path: Path,
) -> None:
    async with await Storage.open(db_path, busy_timeout_s=5) as s:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a moment
        write = asyncio.create_task(s.set_language(ALICE, "de"))
        await asyncio.sleep(0.2)  # our BEGIN IMMEDIATE waits in aiosqlite's thread
        write.cancel()  # e.g. a probe's timeout
        with pytest.raises(asyncio.CancelledError):
            await write
        other.execute("ROLLBACK")  # the waiting BEGIN now succeeds in its thread
        other.close()
        await asyncio.sleep(0.3)
        assert (await s.set_language(BOB, "fr")).language == "fr"  # not "within a transaction"
        assert await s.get_user(ALICE) is None
        assert s.write_error is None


async def test_a_failed_write_is_reported_until_a_write_works(db_path: Path) -> None:
    async with await Storage.open(db_path, busy_timeout_s=0.1) as s:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await s.set_language(ALICE, "de")
        assert "locked" in s.write_error
        other.execute("ROLLBACK")
        other.close()
        await s.set_language(ALICE, "de")
        assert s.write_error is None


async def test_a_message_of_an_erased_user_is_not_taken_again(
    store: Storage, db_path: Path
) -> None:
    """Telegram may deliver an update again after a crash: it must not bring back what
    /forget erased. Only a keyed digest of (chat, message) is kept, for a day."""

    def add(message_id: int):
        return store.add_job(
            chat_id=ALICE, message_id=message_id, user_id=ALICE, chat_type="private",
            question="ERASED-Q", image_file_id="F9",
        )  # fmt: skip

    assert await add(9) is not None
    await store.delete_user_data(ALICE)
    assert await add(9) is None
    assert rows_mentioning(db_path, ALICE) == []
    assert await add(10) is not None  # a new message is a new request
    con = sqlite3.connect(db_path)
    with con:
        con.execute("UPDATE erased_messages SET erased_at = '2020-01-01T00:00:00+00:00'")
    con.close()
    await store.delete_older_than(30)
    assert raw(db_path, "SELECT COUNT(*) FROM erased_messages") == [(0,)]


# --- diet ------------------------------------------------------------------


def toggle(code: str):
    return lambda old: Diet(tuple(set(old.codes) ^ {code}), old.notes)


async def test_a_diet_is_stored_per_user_and_kept_across_reopen(db_path: Path) -> None:
    async with await Storage.open(db_path) as s:
        assert await s.get_diet(ALICE) == Diet()
        diet = Diet(("peanuts", "vegan"), ("no coriander",))
        assert await s.change_diet(ALICE, lambda _: diet, default_language="ja") == diet
        assert diet.codes == ("vegan", "peanuts")  # always in DIET_CODES' order
        assert (await s.get_user(ALICE)).language == "ja"  # created with the given language
        assert await s.get_diet(BOB) == Diet()
        assert (await s.get_user_data(ALICE)).diet == diet
    async with await Storage.open(db_path) as s:
        assert await s.get_diet(ALICE) == diet
        await s.set_language(ALICE, "de")  # other settings leave it alone
        assert await s.get_diet(ALICE) == diet
        assert await s.change_diet(ALICE, lambda _: Diet(), default_language="en") == Diet()
        assert (await s.get_user(ALICE)).language == "de"
    assert raw(db_path, "SELECT diet FROM users WHERE user_id = ?", (ALICE,)) == [(None,)]


async def test_quick_taps_on_the_diet_keyboard_lose_none(store: Storage) -> None:
    codes = ("gluten", "eggs", "fish", "milk", "soy", "celery", "halal", "kosher")
    await asyncio.gather(
        *(store.change_diet(ALICE, toggle(c), default_language="en") for c in codes)
    )
    assert set((await store.get_diet(ALICE)).codes) == set(codes)


async def test_a_database_from_before_diets_keeps_its_users(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    con = sqlite3.connect(db_path)
    for statements in MIGRATIONS[:4]:
        for sql in statements:
            con.execute(sql)
    con.execute(
        "INSERT INTO users VALUES (?, 'fr', 1, '2024-01-01T00:00:00+00:00', "
        "'2024-01-01T00:00:00+00:00')",
        (ALICE,),
    )
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()
    async with await Storage.open(db_path) as s:
        assert s.schema_version == len(MIGRATIONS)
        assert ((await s.get_user(ALICE)).language, await s.get_diet(ALICE)) == ("fr", Diet())
        await s.change_diet(ALICE, toggle("sesame"), default_language="en")
        assert (await s.get_diet(ALICE)).codes == ("sesame",)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ('{"codes": ["vegan", "unicorn"], "notes": ["no coriander"]}',
         Diet(("vegan",), ("no coriander",))),
        ("not json", Diet()),
        ('["a list"]', Diet()),
        ('{"codes": 5}', Diet()),
        ('{"notes": ["' + "x" * 500 + '"]}', Diet((), ("x" * 80,))),
    ],
)  # fmt: skip
async def test_a_stored_diet_is_read_defensively(
    store: Storage, db_path: Path, stored: str, expected: Diet
) -> None:
    """A code a later version dropped, or a row written by hand, never breaks a request."""
    await store.change_diet(ALICE, toggle("milk"), default_language="en")
    con = sqlite3.connect(db_path)
    con.execute("UPDATE users SET diet = ? WHERE user_id = ?", (stored, ALICE))
    con.commit()
    con.close()
    assert await store.get_diet(ALICE) == expected


async def test_forget_erases_the_diet_with_no_copy_in_the_wal(db_path: Path) -> None:
    secret = "no-DIET-SECRET-7741"
    async with await Storage.open(db_path) as s:
        for code in ("gluten", "eggs", "fish"):  # several page images of the row in the WAL
            await s.change_diet(ALICE, toggle(code), default_language="en")
        await s.change_diet(ALICE, lambda d: Diet(d.codes, (secret,)), default_language="en")
        await s.change_diet(BOB, toggle("vegan"), default_language="en")
        assert files_holding(db_path.parent, secret)  # the scan sees it before
        await s.delete_user_data(ALICE)
        assert files_holding(db_path.parent, secret) == []  # database, -wal and -shm
        assert await s.get_diet(ALICE) == Diet()
        assert (await s.get_user_data(ALICE)).diet == Diet()
        assert (await s.get_diet(BOB)).codes == ("vegan",)


# --- albums ------------------------------------------------------------------------------


def album(user_id: int, group: str, *ids: int, chat_id: int | None = None) -> list:
    from bot.storage import AlbumPart

    chat = user_id if chat_id is None else chat_id
    return [
        AlbumPart(chat, n, user_id, group, "private", f"F{n}", 1000, "vegan?" if n == 2 else None)
        for n in ids
    ]


async def test_an_album_is_one_job_with_all_its_pages_in_the_history(
    store: Storage, db_path: Path
) -> None:
    parts = album(ALICE, "G1", 11, 12, 13)
    assert [await store.add_album_part(p) for p in [*parts, parts[1]]] == [True] * 3 + [False]
    assert await store.get_open_album(ALICE, "G1") == parts
    assert await store.get_open_albums() == [(ALICE, "G1")]
    job = await store.close_album(parts, question="vegan?", file_ids=["F11", "F12", "F13"])
    assert (job.message_id, job.image_file_id, job.image_file_ids) == (
        11,
        "F11",
        ("F11", "F12", "F13"),
    )
    assert await store.close_album(parts, question=None, file_ids=["F11"]) is None  # closed
    assert await store.get_open_album(ALICE, "G1") == [] and await store.get_open_albums() == []
    assert await store.add_album_part(parts[2]) is False  # delivered again after closing
    # closed parts keep only what finds a redelivery: no file id, no caption
    assert (
        raw(db_path, "SELECT file_id, caption, job_id FROM album_parts")
        == [(None, None, job.id)] * 3
    )
    assert await store.complete_job(job, answer="All vegan.", thought="")
    [question, _] = await store.get_history(ALICE, ALICE, max_turns=2)
    assert question.image_file_ids == ("F11", "F12", "F13") and question.image_file_id == "F11"
    await store.set_job_file_ids(job.id, ["F11", "F13"])
    assert (await store.get_job(job.id)).image_file_ids == ("F11", "F13")


async def test_an_album_over_the_limit_is_refused_once(store: Storage) -> None:
    from bot.storage import TooManyJobs

    await store.add_job(chat_id=ALICE, message_id=1, user_id=ALICE, chat_type="private",
                        question="x", image_file_id=None)  # fmt: skip
    parts = album(ALICE, "G2", 21, 22)
    for part in parts:
        await store.add_album_part(part)
    with pytest.raises(TooManyJobs):
        await store.close_album(parts, question=None, file_ids=["F21", "F22"], max_unfinished=1)
    assert await store.get_open_album(ALICE, "G2") == []  # not collected again
    assert await store.count_jobs_by_status() == {"pending": 1}


async def test_forget_erases_album_parts_and_their_redelivery(store: Storage) -> None:
    parts = album(ALICE, "G3", 31, 32)
    for part in parts:
        await store.add_album_part(part)
    await store.add_album_part(album(BOB, "G4", 41)[0])
    assert await store.delete_user_data(ALICE) == 2
    assert await store.get_open_albums() == [(BOB, "G4")]
    assert await store.add_album_part(parts[0]) is False  # Telegram delivers it again
    assert await store.close_album(parts, question=None, file_ids=["F31"]) is None


async def test_history_rows_from_before_albums_read_as_one_photo(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as con:  # a version-6 database, as it was shipped
        for sql in [sql for migration in MIGRATIONS[:6] for sql in migration]:
            con.execute(sql)
        con.execute(
            "INSERT INTO messages (user_id, chat_id, role, text, image_file_id, created_at)"
            " VALUES (?, ?, 'user', 'old', 'F1', '2026-12-01T00:00:00+00:00')",
            (ALICE, ALICE),
        )
        con.execute("PRAGMA user_version = 6")
    async with await Storage.open(db_path) as s:
        [message] = (await s.get_user_data(ALICE)).messages
        assert (message.image_file_id, message.image_file_ids) == ("F1", ("F1",))
        [turn] = await s.get_history(ALICE, ALICE, max_turns=1)
        assert turn.image_file_ids == ("F1",)


# --- currency -----------------------------------------------------------------------------


async def test_currency_and_own_rates_are_kept_per_user_and_erased(store: Storage) -> None:
    assert await store.get_currency(ALICE) == storage_mod.CurrencyChoice(None, False, {})
    await store.set_currency_asked(ALICE, default_language="de")
    assert await store.get_currency(ALICE) == storage_mod.CurrencyChoice(None, True, {})
    assert (await store.get_user(ALICE)).language == "de"  # created by it
    await store.set_currency(ALICE, "EUR", default_language="de")
    await store.set_own_rate(ALICE, "JPY", 0.0062)
    await store.set_own_rate(ALICE, "JPY", 0.0061)  # replaced
    await store.set_currency(BOB, "USD", default_language="en")
    assert await store.get_currency(ALICE) == storage_mod.CurrencyChoice(
        "EUR", True, {"JPY": 0.0061}
    )
    assert (await store.get_user_data(ALICE)).currency.own_rates == {"JPY": 0.0061}

    await store.set_currency(ALICE, "CHF", default_language="de")  # rates were to EUR
    assert (await store.get_currency(ALICE)).own_rates == {}
    await store.set_own_rate(ALICE, "THB", 0.025)
    assert await store.delete_user_data(ALICE) >= 2
    assert await store.get_currency(ALICE) == storage_mod.CurrencyChoice(None, False, {})
    assert (await store.get_currency(BOB)).code == "USD"


async def test_reference_rates_are_replaced_by_a_newer_publication(store: Storage) -> None:
    assert await store.get_reference_rates() is None
    await store.set_reference_rates({"EUR": 1.0, "JPY": 160.0, "USD": 1.05}, "2026-12-03")
    await store.set_reference_rates({"EUR": 1.0, "JPY": 161.0}, "2026-12-04")
    rates = await store.get_reference_rates()
    assert (rates.per_euro, rates.date) == ({"EUR": 1.0, "JPY": 161.0}, "2026-12-04")


async def test_a_held_photo_waits_outside_the_limit_until_its_sender_asks(db_path: Path) -> None:
    def add(message_id: int, s: Storage):
        return s.add_job(chat_id=ALICE, message_id=message_id, user_id=ALICE,
                         chat_type="private", question=None, image_file_id=f"P{message_id}",
                         max_unfinished=1)  # fmt: skip

    async with await Storage.open(db_path) as s:
        held = await add(1, s)
        await s.hold_job(held.id)
        assert await s.get_unfinished_jobs() == []  # a restart does not answer it
        running = await add(2, s)  # the held one does not count against the limit
        assert await s.release_job(held.id, BOB) is None  # not Bob's
        with pytest.raises(TooManyJobs):
            await s.release_job(held.id, ALICE, max_unfinished=1)
        await s.set_job_status(running.id, "delivered")
    async with await Storage.open(db_path) as s:  # after a restart it can still be asked
        released = await s.release_job(held.id, ALICE, max_unfinished=1)
        assert (released.id, released.image_file_id) == (held.id, "P1")
        assert await s.release_job(held.id, ALICE) is None  # a second tap
        assert [job.id for job in await s.get_unfinished_jobs()] == [held.id]
        await s.set_job_status(held.id, "delivered")
        again = await add(3, s)
        await s.hold_job(again.id)
        await s.delete_user_data(ALICE)
        assert await s.release_job(again.id, ALICE) is None  # /forget in between


async def test_the_quoted_text_is_kept_only_until_its_job_is_answered(db_path: Path) -> None:
    """Bob replies in a group to Alice's photo: her caption is asked with his job, also
    after a restart, and is gone once answered, failed, erased with Bob's data or Alice's,
    or old."""
    quoted = "ALICE-CAPTION-6610 what is this?"

    def ask(s: Storage, message_id: int):
        return s.add_job(chat_id=GROUP, message_id=message_id, user_id=BOB, chat_type="group",
                         question="spicy?", image_file_id="F1", reply=Reply(quoted))  # fmt: skip

    def quoted_rows() -> list[tuple]:
        return raw(db_path, "SELECT id FROM jobs WHERE quoted IS NOT NULL ORDER BY id")

    async with await Storage.open(db_path) as s:
        answered, failed, held = await ask(s, 1), await ask(s, 2), await ask(s, 3)
        await s.hold_job(held.id)
        assert (answered.quoted, await s.get_job(failed.id)) == (quoted, failed)
    async with await Storage.open(db_path) as s:  # after a restart
        assert [job.quoted for job in await s.get_unfinished_jobs()] == [quoted, quoted]
        await s.complete_job(answered, answer="Not spicy.", thought="")
        await s.set_job_status(failed.id, "failed")
        assert quoted_rows() == [(held.id,)]
        assert quoted not in repr(await s.get_history(GROUP, BOB, max_turns=5))
        with sqlite3.connect(db_path) as con:
            con.execute("UPDATE jobs SET updated_at = '2020-01-01T00:00:00+00:00'")
        con.close()
        await s.delete_older_than(30)  # retention takes the held one, never asked
        assert quoted_rows() == []
        assert files_holding(db_path.parent, quoted) == []
        pending = await ask(s, 4)
        assert files_holding(db_path.parent, quoted)  # the scan sees it before
        await s.delete_user_data(BOB)  # the asker's /forget
        assert await s.get_job(pending.id) is None
        assert files_holding(db_path.parent, quoted) == []
        # Alice's /forget: her caption leaves Bob's job, which stays his, without it
        pending = await s.add_job(chat_id=GROUP, message_id=5, user_id=BOB, chat_type="group",
                                  question="spicy?", image_file_id="F1",
                                  reply=Reply(quoted, quoted_from=ALICE))  # fmt: skip
        assert files_holding(db_path.parent, quoted)
        await s.delete_user_data(ALICE)
        assert (await s.get_job(pending.id)).quoted is None
        assert raw(db_path, "SELECT quoted_from FROM jobs WHERE id = ?", (pending.id,)) == [(None,)]
        assert files_holding(db_path.parent, quoted) == []


async def test_a_members_photo_leaves_others_questions_on_their_forget(db_path: Path) -> None:
    """Bob asks in a group about Alice's photo, and follows up; Alice's /forget takes her
    photo's reference from Bob's jobs and history (the files' old copies too), stops his
    question still waiting, and leaves his words and answers his."""
    photo = "ALICE-PHOTO-FILE-ID-5521"

    def ask(s: Storage, message_id: int, file_id: str | None = photo):
        return s.add_job(chat_id=GROUP, message_id=message_id, user_id=BOB, chat_type="group",
                         question="which has no pork?", image_file_id=file_id,
                         reply=Reply(photo_from=ALICE if file_id else None))  # fmt: skip

    async with await Storage.open(db_path) as s:
        asked = await ask(s, 1)
        assert (asked.photo_from, asked.owners) == (ALICE, (BOB, ALICE))
        await s.complete_job(asked, answer="The second one.", thought="")
        await s.set_job_parts_sent(asked.id, 1, done=True, answer_message_id=2)
        assert await s.get_answered_photo(GROUP, 2) == AnsweredPhoto(photo, BOB, ALICE)
        [turn, _] = await s.get_history(GROUP, BOB, max_turns=5)
        assert (turn.image_file_ids, turn.photo_from, turn.owners) == (
            (photo,),
            ALICE,
            (BOB, ALICE),
        )
        follow_up = await ask(s, 3, None)  # sees Alice's photo again: hers to stop too
        assert await s.mark_history_photo(follow_up, max_turns=5) == ALICE
        done = await ask(s, 7, None)
        assert await s.mark_history_photo(done, max_turns=5) == ALICE
        await s.set_job_status(done.id, "delivered")  # then no longer hers to know of
        assert (await s.get_job(done.id)).photo_from is None
        waiting = await ask(s, 4)
        own = await s.add_job(chat_id=GROUP, message_id=5, user_id=BOB, chat_type="group",
                              question=None, image_file_id="BOB-OWN")  # fmt: skip
        assert (await s.get_user_data(ALICE)).photos_asked_by_others == 1
        assert files_holding(db_path.parent, photo)

        await s.delete_user_data(ALICE)

        assert files_holding(db_path.parent, photo) == []
        assert raw(db_path, "SELECT COUNT(*) FROM jobs WHERE photo_from IS NOT NULL") == [(0,)]
        assert raw(db_path, "SELECT COUNT(*) FROM messages WHERE photo_from IS NOT NULL") == [(0,)]
        assert await s.get_answered_photo(GROUP, 2) is None
        history = await s.get_history(GROUP, BOB, max_turns=5)
        assert [(m.text, m.image_file_ids) for m in history] == [
            ("which has no pork?", ()), ("The second one.", ())
        ]  # fmt: skip
        for job in (follow_up, waiting):  # not yet answered: stopped, nothing stored
            assert (await s.get_job(job.id)).status == "failed"
            assert await s.start_job_attempt(job.id) is None  # one waiting its turn: not run
            assert await s.complete_job(job, answer="late", thought="") is None
        assert (await s.get_job(own.id)).image_file_ids == ("BOB-OWN",)
        assert (await s.get_user_data(ALICE)).photos_asked_by_others == 0
        later = await ask(s, 6, None)
        assert await s.mark_history_photo(later, max_turns=5) is None


# --- /overlay ---------------------------------------------------------------


async def test_the_overlay_setting_is_per_user_shown_and_erased(db_path: Path) -> None:
    async with await Storage.open(db_path) as s:
        assert await s.get_overlay(ALICE) is False
        await s.set_overlay(ALICE, True, default_language="ja")
        assert (await s.get_user(ALICE)).language == "ja"  # created with the given language
        assert await s.get_overlay(BOB) is False
        assert (await s.get_user_data(ALICE)).overlay is True
    async with await Storage.open(db_path) as s:
        assert await s.get_overlay(ALICE) is True
        await s.set_language(ALICE, "de")  # other settings leave it alone
        assert await s.get_overlay(ALICE) is True
        await s.delete_user_data(ALICE)
        assert await s.get_overlay(ALICE) is False
        assert (await s.get_user_data(ALICE)).overlay is False
    assert rows_mentioning(db_path, ALICE) == []


async def test_the_photo_turn_of_an_answer_is_that_users_in_that_chat(store: Storage) -> None:
    group = -500
    await store.add_message(group, ALICE, "user", "menu?", image_file_ids=("p1", "p2"))
    await store.add_message(group, BOB, "user", "and this?", image_file_id="b1")
    answer = await store.add_message(group, ALICE, "model", "It is a menu.")
    turn = await store.get_photo_turn(answer)
    assert turn is not None and turn.image_file_ids == ("p1", "p2")
    await store.add_message(group, ALICE, "user", "what about dessert?")
    text_answer = await store.add_message(group, ALICE, "model", "Cake.")
    assert await store.get_photo_turn(text_answer) is None  # the turn before had no photo
