"""Every locale has every key, the same placeholders and balanced tags as English."""

from __future__ import annotations

import re

import pytest

from bot.i18n import Texts
from bot.settings import ROOT

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


def test_language_matching() -> None:
    assert TEXTS.match_language("de") == "de"
    assert TEXTS.match_language("pt-BR") == "pt"
    assert TEXTS.match_language("Deutsch") == "de"
    assert TEXTS.match_language("german") == "de"
    assert TEXTS.match_language("日本語") == "ja"
    assert TEXTS.match_language("klingon") is None
    assert TEXTS.match_language("") is None


def test_unknown_locale_falls_back_to_english() -> None:
    assert TEXTS.get("xx", "think_on") == TEXTS.get("en", "think_on")


def _dummy(key: str) -> dict[str, str]:
    return {name: "1" for name in TEXTS.placeholders("en", key)}
