import hashlib
import hmac
import json
import logging
import stat
from pathlib import Path

import pytest
import structlog

import bot.logging
from bot.logging import configure_logging, install_pseudonym_key, user_ref


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_token_is_scrubbed_from_our_and_library_logs(capsys) -> None:
    token = "123456789:AAF-secret-token"
    configure_logging(log_format="json", secrets=(token,))
    structlog.get_logger().info("request_failed", url=f"https://api.telegram.org/bot{token}/x")
    logging.getLogger("telegram.ext.Updater").warning("Error while calling %s", f"bot{token}/get")
    try:
        raise RuntimeError(f"boom {token}")
    except RuntimeError:
        structlog.get_logger().exception("handler_failed")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 3
    assert all(token not in json.dumps(line) for line in lines)
    assert lines[0]["url"] == "https://api.telegram.org/bot***/x"
    assert "boom ***" in lines[2]["exception"]


def test_debug_reaches_our_events_but_no_library_debug_records(capsys) -> None:
    configure_logging(log_format="json", level="DEBUG")
    structlog.get_logger("bot.answering").debug("ours")
    for library in ("aiosqlite", "telegram.ext.Application", "telegram.Bot", "tornado.access"):
        logging.getLogger(library).debug("Processing update caption=%s", "Where is the exit?")
    logging.getLogger("telegram.ext.Application").info("Application started")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["ours", "Application started"]


@pytest.fixture
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's key is put back after the test installed others."""
    monkeypatch.setattr(bot.logging, "_pseudonym_key", bot.logging._pseudonym_key)


def old_ref(user_id: int) -> str:
    """The unkeyed pseudonym found again by hashing every possible id."""
    return hashlib.sha256(f"travelbot:{user_id}".encode()).hexdigest()[:12]


def test_user_ref_is_keyed(pseudonym_key: None, tmp_path: Path) -> None:
    user_id = 7301946285
    assert user_ref(user_id) == user_ref(user_id) != user_ref(user_id + 1)
    assert user_ref(user_id) != old_ref(user_id)  # keyed before any key is installed, too
    install_pseudonym_key("first key, 16 chars or more", tmp_path / "unused.key")
    first = user_ref(user_id)
    expected = hmac.new(b"first key, 16 chars or more", b"7301946285", hashlib.sha256)
    assert first == expected.hexdigest()[:12] != old_ref(user_id)
    install_pseudonym_key("another key of 16 chars or more", tmp_path / "unused.key")
    assert user_ref(user_id) != first
    install_pseudonym_key("first key, 16 chars or more", tmp_path / "unused.key")
    assert user_ref(user_id) == first
    assert not (tmp_path / "unused.key").exists()


def test_without_a_configured_key_one_is_made_private_and_kept(
    pseudonym_key: None, tmp_path: Path
) -> None:
    key_file = tmp_path / "data" / "log-pseudonym.key"
    install_pseudonym_key(None, key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # this test's umask is 022
    first, stored = user_ref(42), key_file.read_text()
    assert first != old_ref(42)
    install_pseudonym_key("another key of 16 chars or more", key_file)
    assert user_ref(42) != first
    install_pseudonym_key(None, key_file)  # the next start: the same key, the same pseudonyms
    assert user_ref(42) == first and key_file.read_text() == stored


async def test_updates_the_library_cannot_read_are_not_logged(capsys) -> None:
    """A malformed update makes python-telegram-bot log the whole batch it received (other
    users' captions too) at ERROR: the real client, against the local Bot API server."""
    from telegram import Bot
    from telegram.error import TelegramError

    from tests.e2e.botapi_server import TOKEN, BotApiServer, TgUser

    configure_logging(log_format="json")
    async with BotApiServer() as server:
        server.send_text(TgUser(id=4242424242), "MY-PRIVATE-CAPTION")
        server.push_update({"message": {"message_id": 2}})  # no chat, no date: unreadable
        async with Bot(TOKEN, base_url=server.base_url) as client:
            with pytest.raises((TelegramError, TypeError, KeyError, ValueError)):
                await client.get_updates(timeout=0)
    err = capsys.readouterr().err
    assert "Received data was" not in err or "not logged" in err
    assert "MY-PRIVATE-CAPTION" not in err and "4242424242" not in err
    assert "Error while parsing updates" in err  # the event itself stays
