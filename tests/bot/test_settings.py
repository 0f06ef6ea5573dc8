"""Settings for webhook mode, the HTTP port, the batch engine's KV cache budget, lists, and
what a wrong value says."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import Settings, load_settings


def test_webhook_secret_is_random_when_unset_and_never_shown() -> None:
    first, second = Settings(_env_file=None), Settings(_env_file=None)
    secret = first.webhook_secret_token.get_secret_value()
    assert len(secret) >= 32 and secret != second.webhook_secret_token.get_secret_value()
    assert secret not in repr(first) and secret not in str(first.model_dump())
    emptied = Settings(_env_file=None, webhook_secret_token="")  # e.g. a blank line in .env
    assert len(emptied.webhook_secret_token.get_secret_value()) >= 32


def test_webhook_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAVELBOT_WEBHOOK_SECRET_TOKEN", "my_Secret-42")
    monkeypatch.setenv("TRAVELBOT_WEBHOOK_URL", "https://bot.example.org/telegram")
    settings = Settings(_env_file=None)
    assert settings.webhook_secret_token.get_secret_value() == "my_Secret-42"
    assert settings.webhook_url == "https://bot.example.org/telegram"


@pytest.mark.parametrize("secret", ["has space", "slash/", "ümlaut", "x" * 257])
def test_webhook_secret_telegram_would_refuse_is_an_error(secret: str) -> None:
    with pytest.raises(ValidationError, match="only A-Z, a-z, 0-9, _ and -"):
        Settings(_env_file=None, webhook_secret_token=secret)


def test_polling_and_no_http_port_by_default() -> None:
    settings = Settings(_env_file=None)
    assert settings.webhook_url is None and settings.http_port == 0
    assert settings.webhook_listen == settings.http_listen == "127.0.0.1"


def test_the_kv_cache_budget_goes_to_the_batch_engine_in_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.__main__ import runtime_config

    assert runtime_config(Settings(_env_file=None)).kv_cache_bytes is None  # max_batch_size
    monkeypatch.setenv("TRAVELBOT_KV_CACHE_GIB", "1.5")
    assert runtime_config(Settings(_env_file=None)).kv_cache_bytes == 3 * 2**29
    with pytest.raises(ValidationError):
        Settings(_env_file=None, kv_cache_gib=0)


def test_the_photo_cache_budget_goes_to_the_batch_engine_in_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.__main__ import runtime_config

    assert runtime_config(Settings(_env_file=None)).photo_cache_bytes == 512 * 2**20
    monkeypatch.setenv("TRAVELBOT_PHOTO_CACHE_MIB", "0")  # off
    assert runtime_config(Settings(_env_file=None)).photo_cache_bytes == 0
    with pytest.raises(ValidationError):
        Settings(_env_file=None, photo_cache_mib=-1)


def test_log_pseudonym_key_is_optional_long_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).log_pseudonym_key is None
    assert Settings(_env_file=None, log_pseudonym_key="").log_pseudonym_key is None
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(_env_file=None, log_pseudonym_key="short")
    monkeypatch.setenv("TRAVELBOT_LOG_PSEUDONYM_KEY", "k" * 16)
    monkeypatch.setenv("TRAVELBOT_DATABASE_PATH", "/srv/bot/db.sqlite3")
    settings = Settings(_env_file=None)
    assert "k" * 16 in settings.secret_values() and "k" * 16 not in repr(settings)
    assert str(settings.log_pseudonym_key_file) == "/srv/bot/log-pseudonym.key"


def test_every_secret_setting_is_scrubbed_from_logs() -> None:
    values = {"telegram_token": "1:tok", "openai_api_key": "oa", "serve_api_key": "sv"}
    settings = Settings(_env_file=None, webhook_secret_token="wh", **values)
    assert sorted(settings.secret_values()) == ["1:tok", "oa", "sv", "wh"]


def test_log_level_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAVELBOT_LOG_LEVEL", "debug")
    assert Settings(_env_file=None).log_level == "DEBUG"
    with pytest.raises(ValidationError):
        Settings(_env_file=None, log_level="verbose")


@pytest.mark.parametrize("field", ["allowed_user_ids", "admin_user_ids"])
@pytest.mark.parametrize(
    ("text", "ids"),
    [("111,222", {111, 222}), (" 111 , 222, ", {111, 222}), ("111", {111}),
     ("[111, 222]", {111, 222}), ("", set()), ("[]", set())],
)  # fmt: skip
def test_user_ids_comma_separated_or_json(
    field: str, text: str, ids: set[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"TRAVELBOT_{field.upper()}", text)
    assert getattr(Settings(_env_file=None), field) == ids


def test_openai_base_urls_comma_separated_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    urls = ["http://vllm-0:8000/v1", "http://vllm-1:8000/v1"]
    monkeypatch.setenv("TRAVELBOT_OPENAI_BASE_URLS", "http://vllm-0:8000/v1, http://vllm-1:8000/v1")
    assert Settings(_env_file=None).openai_base_urls == urls
    monkeypatch.setenv("TRAVELBOT_OPENAI_BASE_URLS", '["http://vllm-0:8000/v1"]')  # as before
    assert Settings(_env_file=None).openai_base_urls == urls[:1]


def test_lists_in_the_env_file_comma_separated_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("TRAVELBOT_ADMIN_USER_IDS=111,222\n")
    assert load_settings().admin_user_ids == {111, 222}


def test_each_wrong_variable_is_one_line_naming_it_and_what_it_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("TRAVELBOT_ALLOWED_USER_IDS", "111,Bob")
    monkeypatch.setenv("TRAVELBOT_ADMIN_USER_IDS", "[111,")
    monkeypatch.setenv("TRAVELBOT_ENGINE", "vllm")
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    takes_ids = "it takes comma-separated Telegram user ids, e.g. 111,222 (or a JSON list)"
    assert capsys.readouterr().err.splitlines() == [
        "Invalid setting TRAVELBOT_ALLOWED_USER_IDS, item 2: Input should be a valid integer, "
        f"unable to parse string as an integer; {takes_ids}",
        "Invalid setting TRAVELBOT_ADMIN_USER_IDS: Value error, starts with [ but is no JSON "
        f"list; {takes_ids}",
        "Invalid setting TRAVELBOT_ENGINE: Input should be 'batch', 'generate' or 'openai'",
    ]
