"""The generated photo set: deterministic, every language and kind, truth that fits it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.fonts import FontSet
from bot.settings import Settings
from evaluation.content import LANGUAGES, SCRIPTS
from evaluation.photoset import KINDS, build_set
from evaluation.spoil import CONDITIONS


@pytest.fixture(scope="module")
def fonts() -> FontSet:
    return FontSet.find(Settings(_env_file=None).fonts_dir)


def test_the_set_covers_every_language_kind_and_condition(fonts: FontSet) -> None:
    photos = build_set(fonts, kinds=("sign", "menu"))
    assert len(SCRIPTS) == 11 and len(LANGUAGES) == 16  # the 12+ scripts and languages
    assert {p.language for p in photos} == {w.code for w in LANGUAGES}
    assert {(p.language, p.kind) for p in photos} == {
        (w.code, k) for w in LANGUAGES for k in ("sign", "menu")
    }
    assert {p.condition for p in build_set(fonts, languages=("de", "ja"))} <= set(CONDITIONS)
    for photo in photos:
        assert photo.answer_language != photo.language.split("-")[0]
        image = Image.open(io.BytesIO(photo.image))
        assert image.format == "JPEG" and min(image.size) >= 500


def test_the_same_seed_draws_the_same_photos(fonts: FontSet) -> None:
    first = build_set(fonts, languages=("ar", "th"), kinds=("menu", "board"))
    again = build_set(fonts, languages=("ar", "th"), kinds=("menu", "board"))
    other = build_set(fonts, languages=("ar", "th"), kinds=("menu", "board"), seed=1)
    assert [p.image for p in first] == [p.image for p in again]
    assert [p.truth() for p in first] == [p.truth() for p in again]
    assert [p.image for p in first] != [p.image for p in other]
    assert [p.facts for p in first] != [p.facts for p in other]  # prices, times, platforms


def test_a_covered_line_is_unreadable_and_its_facts_are_not_asked(fonts: FontSet) -> None:
    covered = build_set(fonts, conditions=("covered",))
    assert len(covered) == len(KINDS) * len(LANGUAGES) // len(CONDITIONS)
    for photo in covered:
        assert len(photo.unreadable) == 1 and photo.unreadable[0] not in photo.lines
    menu = next(p for p in build_set(fonts, languages=("de",), kinds=("menu",)))
    assert "Käsespätzle" in menu.lines and menu.facts[-1].value == "peanuts"
    assert [f.kind for f in menu.facts] == ["number", "number", "number", "concept"]
