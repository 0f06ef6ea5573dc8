"""Every locale has every key, the same placeholders and balanced tags as English."""

from __future__ import annotations

import re

import pytest

from bot.i18n import Texts
from bot.settings import ROOT
from inference.languages import match_language, native_name

TEXTS = Texts.load(ROOT / "locales")
REQUIRED = {"en", "de", "fr", "es", "it", "pt", "ru", "uk", "ja", "zh", "ko", "ar"}
TAG = re.compile(r"</?[a-z]+[^>]*>")


def test_at_least_the_required_languages() -> None:
    assert set(TEXTS.languages) >= REQUIRED


@pytest.mark.parametrize("language", TEXTS.languages)
def test_same_keys_placeholders_and_tags_as_english(language: str) -> None:
    assert TEXTS.keys(language) == TEXTS.keys("en")
    for key in TEXTS.keys("en"):
        assert TEXTS.placeholders(language, key) == TEXTS.placeholders("en", key), key
        english_tags = sorted(TAG.findall(TEXTS.get("en", key, **_dummy(key))))
        tags = sorted(TAG.findall(TEXTS.get(language, key, **_dummy(key))))
        assert tags == english_tags, key
        assert TEXTS.get(language, key, **_dummy(key)).strip(), key


@pytest.mark.parametrize("language", TEXTS.languages)
def test_command_descriptions_fit_telegram(language: str) -> None:
    for key in TEXTS.keys("en"):
        if key.startswith("cmd_"):
            assert 3 <= len(TEXTS.get(language, key)) <= 256


@pytest.mark.parametrize(
    ("language", "ui"),
    [
        ("de", "de"),
        ("pt-PT", "pt"),
        ("pt-BR", "pt"),
        ("zh-Hant", "zh"),
        ("es-MX", "es"),
        ("nl", "en"),  # no Dutch UI: English
        ("fil", "en"),
        ("xx", "en"),
    ],
)
def test_ui_language_is_the_nearest_locale(language: str, ui: str) -> None:
    assert TEXTS.ui_language(language) == ui
    assert TEXTS.get(language, "lang_set", language="x") == TEXTS.get(ui, "lang_set", language="x")


@pytest.mark.parametrize("language", TEXTS.languages)
def test_ui_languages_are_answer_languages_of_the_same_name(language: str) -> None:
    # /lang's keyboard offers the UI languages; a locale names itself as the table does
    assert match_language(language) == language
    assert TEXTS.get(language, "language_name") == native_name(language)


def _dummy(key: str) -> dict[str, str]:
    return {name: "1" for name in TEXTS.placeholders("en", key)}
