"""Privacy of a real `travelbot run` process: at DEBUG its output holds no user text, raw user
id or file id; its files are its user's alone; and however it ends, no secret is printed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.settings import ROOT
from tests.conftest import free_port, small_photo
from tests.e2e.botapi_server import TOKEN, ApiCall, BotApiServer, TgUser, bot_process_env

# The `travelbot` console script, run with this checkout's code (cwd first on sys.path)
TRAVELBOT = (sys.executable, "-c", "from bot.cli import main; main()")


async def polled(server: BotApiServer, bot: subprocess.Popen) -> None:
    """Wait until the bot (model loaded, Telegram reached) polls for updates."""
    for _ in range(90):
        assert bot.poll() is None, "the bot exited"
        try:
            await server.wait_for(lambda c: c.method == "getUpdates", timeout=1)
            return
        except TimeoutError:
            pass
    raise TimeoutError("the bot never polled")


async def answer_after(server: BotApiServer, chat_id: int, mark: int) -> ApiCall:
    """The answer to what the user sent after `mark`: a placeholder first, then the answer,
    sent as a new message once the model is done, with the placeholder deleted."""

    def sent(call: ApiCall) -> bool:
        return call.method == "sendMessage" and call.params.get("chat_id") == chat_id

    placeholder = await server.wait_for(sent, after=mark, timeout=60)
    placeholder_id = placeholder.result["message_id"]
    await server.wait_for(
        lambda c: c.method == "deleteMessage" and c.params["message_id"] == placeholder_id,
        after=mark,
        timeout=60,
    )
    return next(c for c in server.calls[mark:] if sent(c) and c is not placeholder)


async def test_debug_logs_hold_no_user_text_ids_or_file_ids(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    caption = "Where is platform Zyxwv-4417 please"
    follow_up = "And the lockers near Qorvath-9931"
    ann = TgUser(id=7301946285)  # ten digits, as real ids are: found in no timestamp or count
    data = tmp_path / "data"  # made by the bot
    log = tmp_path / "bot.log"
    async with BotApiServer() as server:
        env = bot_process_env(server, tiny_model_dir, data / "bot.sqlite3", max_new_tokens="8",
                              log_format="json", log_level="DEBUG")  # fmt: skip
        bot = subprocess.Popen(
            [*TRAVELBOT, "run"], env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        try:
            await polled(server, bot)
            mark = server.mark()
            photo = server.send_photo(ann, small_photo("EXIT"), caption=caption)
            assert (await answer_after(server, ann.id, mark)).params["text"]
            mark = server.mark()
            server.send_text(ann, follow_up)  # the photo is fetched again, by its file_id
            assert (await answer_after(server, ann.id, mark)).params["text"]
            assert any(c.method == "getFile" for c in server.calls[mark:])
        finally:
            bot.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(bot.wait, 60)
    assert returncode == 0
    output = log.read_text()
    file_ids = {size[key] for size in photo["photo"] for key in ("file_id", "file_unique_id")}
    for private in (caption, follow_up, str(ann.id), *file_ids):
        assert private not in output
    # The user appears under the pseudonym keyed with the key the bot made and kept
    key_file = data / "log-pseudonym.key"
    key = bytes.fromhex(key_file.read_text())
    pseudonym = hmac.new(key, str(ann.id).encode(), hashlib.sha256).hexdigest()[:12]
    assert f'"user": "{pseudonym}"' in output
    # The process's umask, not this test's (022), decided the modes of what it made
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in data.iterdir()} == {0o600}
    assert key_file in set(data.iterdir())


def run_bot(env: dict[str, str]) -> tuple[int, str]:
    """`travelbot run` to its end; its exit status and everything it printed."""
    done = subprocess.run([*TRAVELBOT, "run"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def failed_start(env: dict[str, str]) -> tuple[dict, str]:
    """`travelbot run` that must fail before its model loads: within seconds (loading the
    tiny model alone takes longer on the test machines, the full-size one minutes), with
    its reason as one JSON event, the only thing it printed. That event and the output."""
    started = time.monotonic()
    returncode, output = run_bot(env)
    assert returncode == 1 and time.monotonic() - started < 8, output
    events = [json.loads(line) for line in output.splitlines()]  # every line an event
    assert "model_loading" not in {event["event"] for event in events}
    assert events[-1]["event"] == "bot_failed" and "exception" not in events[-1]
    assert TOKEN.split(":")[1] not in output
    return events[-1], output


async def test_a_rejected_token_ends_the_start_before_the_model_loads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    token = f"987654321:REJECTED-{secrets.token_hex(12)}"
    async with BotApiServer() as server:  # knows only its own TOKEN: 401 for this one
        env = bot_process_env(server, tiny_model_dir, tmp_path / "bot.sqlite3", log_format="json")
        env["TRAVELBOT_TELEGRAM_TOKEN"] = token
        failed, output = await asyncio.to_thread(failed_start, env)
    assert failed["reason"] == "token_rejected"
    assert "Telegram rejected the token in TRAVELBOT_TELEGRAM_TOKEN" in failed["error"]
    assert token.split(":")[1] not in output


def test_an_unreachable_telegram_ends_the_start_before_the_model_loads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/bot"  # nothing listens there
    env = bot_process_env(BotApiServer(), tiny_model_dir, tmp_path / "bot.sqlite3",
                          log_format="json", telegram_base_url=closed)  # fmt: skip
    failed, _ = failed_start(env)
    assert failed["reason"] == "telegram_unreachable"
    assert f"Cannot reach Telegram's Bot API at {closed}" in failed["error"]


async def test_a_database_folder_that_cannot_be_written_is_named_before_the_model_loads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # A file where the data folder should be: what stops root too, whom file modes do not
    folder = tmp_path / "file.txt"
    folder.write_text("not a folder")
    async with BotApiServer() as server:
        env = bot_process_env(server, tiny_model_dir, folder / "bot.sqlite3", log_format="json")
        failed, _ = await asyncio.to_thread(failed_start, env)
    assert failed["reason"] == "database_unusable"
    assert f"Cannot write the database {folder / 'bot.sqlite3'}: {folder} " in failed["error"]
    assert "TRAVELBOT_DATABASE_PATH" in failed["error"]
    assert not server.calls  # not even Telegram was asked: the database comes first


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRAVELBOT_WEBHOOK_SECRET_TOKEN", f"not/allowed-{secrets.token_hex(8)}"),
        ("TRAVELBOT_LOG_PSEUDONYM_KEY", "k3y-Qz8Wv"),  # too short
    ],
)
def test_an_invalid_secret_setting_is_named_but_never_shown(
    variable: str, value: str, tmp_path: Path
) -> None:
    env = bot_process_env(BotApiServer(), "unused", tmp_path / "bot.sqlite3", log_format="json")
    env[variable] = value
    returncode, output = run_bot(env)
    assert returncode == 2
    assert output.startswith(f"Invalid setting {variable}: ") and output.count("\n") == 1
    assert value not in output and TOKEN not in output


async def test_missing_fonts_end_the_start_before_the_model_loads_naming_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    async with BotApiServer() as server:
        env = bot_process_env(server, tiny_model_dir, tmp_path / "bot.sqlite3", log_format="json")
        env["TRAVELBOT_FONTS_DIR"] = str(tmp_path)  # no fonts there
        failed, _ = await asyncio.to_thread(failed_start, env)
    assert failed["reason"] == "fonts_missing"
    assert "NotoSansCJK-Regular.ttc" in failed["error"] and "fonts-noto-cjk" in failed["error"]
    assert "TRAVELBOT_FONTS_DIR" in failed["error"]
    assert not server.calls  # found missing before Telegram was asked
