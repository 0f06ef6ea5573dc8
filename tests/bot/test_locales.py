"""Every locale has every key, the same placeholders and balanced tags as English; strings
with a count take the plural form CLDR gives the count, in the locale's own register."""

from __future__ import annotations

import json
import re

import pytest
from babel import Locale

from bot.app import COMMANDS
from bot.i18n import Texts
from bot.settings import ROOT
from inference.languages import match_language, native_name

TEXTS = Texts.load(ROOT / "locales")
CATALOGS = {
    path.stem: json.loads(path.read_text(encoding="utf-8"))
    for path in (ROOT / "locales").glob("*.json")
}
# the strings with a word that agrees with a number ("1 record", "5 records")
PLURAL_KEYS = [
    "album_pages_unreadable",
    "diet_too_long",
    "diet_too_many",
    "error_busy_eta",
    "forget_done",
    "question_too_long",
    "queue_position_eta",
    "too_many_requests",
]
REQUIRED = {"en", "de", "fr", "es", "it", "pt", "ru", "uk", "ja", "zh", "ko", "ar"}
TAG = re.compile(r"</?[a-z]+[^>]*>")


def test_at_least_the_required_languages() -> None:
    assert set(TEXTS.languages) >= REQUIRED


@pytest.mark.parametrize("language", TEXTS.languages)
def test_same_keys_placeholders_and_tags_as_english(language: str) -> None:
    assert TEXTS.keys(language) == TEXTS.keys("en")
    for key in TEXTS.keys("en"):
        assert TEXTS.placeholders(language, key) == TEXTS.placeholders("en", key), key
        english_tags = sorted(TAG.findall(TEXTS.templates("en", key)[0]))
        for template in TEXTS.templates(language, key):  # each plural form
            assert sorted(TAG.findall(template)) == english_tags, key
            assert template.strip(), key
        assert TEXTS.get(language, key, **_dummy(key)).strip(), key


def test_the_strings_whose_words_agree_with_a_count_have_plural_forms() -> None:
    plural = sorted(key for key, value in CATALOGS["en"].items() if isinstance(value, dict))
    assert plural == PLURAL_KEYS
    # The other numbers stand where no word agrees with them: a label ("Messages: {count}"),
    # a unit symbol ("{size_mb} MB") or an ordinal written as a sign ("#{position}").
    counted = {"count", "limit", "length", "seconds", "size_mb", "limit_mb", "position"}
    singular = {k for k in TEXTS.keys("en") if TEXTS.placeholders("en", k) & counted}
    assert singular - set(PLURAL_KEYS) == {
        "image_too_large",
        "mydata_summary",
        "mydata_held",
        "mydata_photos_asked_by_others",
        "queue_position",
    }


@pytest.mark.parametrize("language", TEXTS.languages)
def test_plural_strings_have_each_form_cldr_gives_the_language(language: str) -> None:
    categories = Locale.parse(language).plural_form.tags | {"other"}
    for key in PLURAL_KEYS:
        [(count, forms)] = CATALOGS[language][key].items()
        [english_count] = CATALOGS["en"][key]
        assert count == english_count, key
        assert set(forms) == categories, key


@pytest.mark.parametrize("number", [1, 2, 5, 11, 21, 101])
@pytest.mark.parametrize("language", ["ru", "uk", "pl", "ar", "en", "de", "fr", "ja"])
def test_a_count_takes_the_form_cldr_chooses(language: str, number: int) -> None:
    category = Locale.parse(language).plural_form(number)
    for key in PLURAL_KEYS:
        [(count, forms)] = CATALOGS[language][key].items()
        values = _dummy(key) | {count: number}
        assert TEXTS.get(language, key, **values) == forms[category].format(**values), key


@pytest.mark.parametrize(
    ("language", "key", "values", "expected"),
    [
        ("en", "forget_done", {"count": 1}, "Done: I erased 1 record."),
        ("de", "forget_done", {"count": 1}, "Erledigt: 1 Eintrag gelöscht."),
        ("ru", "too_many_requests", {"limit": 5}, "У тебя уже 5 вопросов ждут ответа."),
        ("ru", "too_many_requests", {"limit": 3}, "У тебя уже 3 вопроса ждут ответа."),
        ("ru", "too_many_requests", {"limit": 21}, "У тебя уже 21 вопрос ждёт ответа."),
        ("uk", "forget_done", {"count": 11}, "Готово: видалено 11 записів."),
        ("pl", "forget_done", {"count": 22}, "Gotowe: usunięto 22 wpisy."),
        ("pl", "forget_done", {"count": 25}, "Gotowe: usunięto 25 wpisów."),
        ("ar", "error_busy_eta", {"seconds": 10}, "بعد حوالي 10 ثوانٍ."),
        ("ar", "error_busy_eta", {"seconds": 20}, "بعد حوالي 20 ثانية."),
        ("ar", "error_busy_eta", {"seconds": 2}, "بعد حوالي ثانيتين."),
        ("fr", "too_many_requests", {"limit": 1}, "Tu as déjà 1 question en attente"),
        ("zh-Hant", "forget_done", {"count": 1}, "删除了 1 条记录"),  # zh's forms, one of them
    ],
)
def test_counted_words_agree_with_their_number(
    language: str, key: str, values: dict, expected: str
) -> None:
    assert expected in TEXTS.get(language, key, **_dummy(key) | values)


# The formal address each locale avoids: its strings speak to the user as a friend would
# (ты, ти, tu, 你, 해요, sen), so none may switch to Вы, Ви, vous, 您, 합니다 or siz.
FORMAL = {
    "ru": r"\b[Вв](?:ы|ас|ам|аш\w*)\b|\w+(?:ьте|йте)\b",
    "uk": r"\b[Вв](?:и|ас|ам|аш\w*)\b|\w+іть\b",
    "fr": r"\b[Vv](?:ous|otre|os)\b",
    "zh": "您",
    "ko": "니다",
    "tr": "ınız|iniz|unuz|ünüz",
}


@pytest.mark.parametrize("language", sorted(FORMAL))
def test_every_string_keeps_the_locales_register(language: str) -> None:
    for key in TEXTS.keys(language):
        for template in TEXTS.templates(language, key):
            assert not re.search(FORMAL[language], template), (key, template)


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


def _dummy(key: str) -> dict[str, int]:
    return {name: 1 for name in TEXTS.placeholders("en", key)}


@pytest.mark.parametrize("language", TEXTS.languages)
def test_help_names_every_command_of_the_menu(language: str) -> None:
    help_text = TEXTS.get(language, "help", language="x", think="y")
    for command in set(COMMANDS) - {"start"}:
        assert f"\n/{command} – " in help_text, command
