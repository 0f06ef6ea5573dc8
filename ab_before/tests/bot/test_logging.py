import json
import logging

import pytest
import structlog

from bot.logging import configure_logging, user_ref


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


def test_user_ref_is_stable_and_not_the_id() -> None:
    assert user_ref(42) == user_ref(42) != user_ref(43)
    assert "42" not in user_ref(42)
