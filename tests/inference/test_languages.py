"""Answer languages: what `/lang` and Telegram's language_code resolve to, and the names the
model prompt and users get."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inference.languages import LANGUAGES, language_name, match_language, native_name
from inference.prompts import travel_chat
from inference.types import Request

ROOT = Path(__file__).resolve().parents[2]

EU = {
    "bg", "cs", "da", "de", "el", "en", "es", "et", "fi", "fr", "ga", "hr",
    "hu", "it", "lt", "lv", "mt", "nl", "pl", "pt", "ro", "sk", "sl", "sv",
}  # fmt: skip
OTHERS = {
    "no", "is", "ca", "eu", "gl", "cy", "sq", "bs", "sr", "mk", "ru", "uk", "be", "tr", "ar",
    "he", "fa", "hi", "bn", "ur", "th", "vi", "id", "ms", "fil", "sw", "ja", "ko", "ka", "hy",
    "zh", "zh-Hant", "pt-PT", "pt-BR",
}  # fmt: skip


@pytest.mark.parametrize(
    ("query", "code"),
    [
        # the examples
        ("nl", "nl"),
        ("Nederlands", "nl"),
        ("dutch", "nl"),
        ("zh-Hant", "zh-Hant"),
        ("繁體中文", "zh-Hant"),
        ("pt-PT", "pt-PT"),
        ("português europeu", "pt-PT"),
        # case, accents and separators do not matter
        ("NEDERLANDS", "nl"),
        ("Portugues  Europeu", "pt-PT"),
        ("zh_hant", "zh-Hant"),
        ("PT_br", "pt-BR"),
        ("Chinese (Traditional)", "zh-Hant"),
        ("tiếng việt", "vi"),
        ("tieng viet", "vi"),
        # Chinese: Taiwan, Hong Kong and Macau write Traditional; plain zh stays Simplified
        ("zh-TW", "zh-Hant"),
        ("zh-hk", "zh-Hant"),
        ("zh-MO", "zh-Hant"),
        ("zh-Hant-TW", "zh-Hant"),
        ("zh", "zh"),
        ("zh-Hans", "zh"),
        ("zh-CN", "zh"),
        ("zh-Hans-CN", "zh"),
        ("中文", "zh"),
        ("简体中文", "zh"),
        # Portuguese: Brazil and Portugal told apart; plain pt stays Portuguese
        ("pt", "pt"),
        ("pt-br", "pt-BR"),
        ("brazilian portuguese", "pt-BR"),
        ("European Portuguese", "pt-PT"),
        ("pt-AO", "pt"),
        ("Português", "pt"),
        # a region without a variant of its own is the plain language
        ("es-MX", "es"),
        ("en-US", "en"),
        ("nl-BE", "nl"),
        ("es-419", "es"),
        # the UI languages' names, as before
        ("de", "de"),
        ("Deutsch", "de"),
        ("german", "de"),
        ("日本語", "ja"),
        # other names and old codes
        ("farsi", "fa"),
        ("tagalog", "fil"),
        ("tl", "fil"),
        ("nb", "no"),
        ("iw", "he"),
        ("Bahasa Indonesia", "id"),
    ],
)
def test_match_language(query: str, code: str) -> None:
    assert match_language(query) == code


@pytest.mark.parametrize(
    "query", ["klingon", "", "   ", "xx", "xx-YY", "english please", "chinese food", "-", "d"]
)
def test_unknown_queries_match_nothing(query: str) -> None:
    assert match_language(query) is None


def test_the_languages_a_traveller_needs_are_there() -> None:
    assert set(LANGUAGES) >= EU | OTHERS
    assert len(LANGUAGES) >= 60


def test_every_code_name_and_native_name_matches_its_language() -> None:
    for code, language in LANGUAGES.items():
        for text in (code, language.name, language.native, *language.aliases):
            assert match_language(text) == code, text


@pytest.mark.parametrize(
    ("code", "name", "native"),
    [
        ("nl", "Dutch", "Nederlands"),
        ("zh", "Simplified Chinese", "简体中文"),
        ("zh-Hant", "Traditional Chinese", "繁體中文"),
        ("pt", "Portuguese", "Português"),
        ("pt-PT", "European Portuguese", "Português (Portugal)"),
        ("pt-BR", "Brazilian Portuguese", "Português (Brasil)"),
        ("zh-TW", "Traditional Chinese", "繁體中文"),  # a code written otherwise
        ("xx", "xx", "xx"),  # unknown: the code itself
    ],
)
def test_names(code: str, name: str, native: str) -> None:
    assert language_name(code) == name
    assert native_name(code) == native


@pytest.mark.parametrize(
    ("code", "name"),
    [("pt-PT", "European Portuguese"), ("zh-Hant", "Traditional Chinese"), ("nl", "Dutch")],
)
def test_the_prompt_names_the_answer_language(code: str, name: str) -> None:
    chat = travel_chat(Request(language=code, question="?"))
    assert f" {name}" in "\n".join(m.text for m in chat if m.role == "system")


def test_needs_neither_telegram_nor_torch() -> None:
    # the bot (no torch) and the prompt builder (no telegram) both import it
    code = (
        "import sys\n"
        "for name in ('telegram', 'torch', 'transformers'):\n"
        "    sys.modules[name] = None  # importing it fails\n"
        "import inference.languages\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
