"""Phrase cards drawn with the real Noto fonts and Pillow's raqm layout: every script's font
is found, Arabic is joined, text is wrapped and shrunk to fit, nothing is drawn off the card."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from bot.fonts import FONT_FILES, FontSet, FontsMissing, script_of
from bot.phrase_card import CARD_SIZE, MARGIN, MAX_TEXT_PX, fit, render_card, wrap
from bot.settings import Settings
from inference import Phrase


@pytest.fixture(scope="module")
def fonts() -> FontSet:
    return FontSet.find(Settings(_env_file=None).fonts_dir)


def ink_box(png: bytes) -> tuple[int, int, int, int]:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == CARD_SIZE
    box = ImageChops.difference(image, Image.new("RGB", image.size, "white")).getbbox()
    assert box is not None, "nothing was drawn"
    return box


def assert_inside_margins(box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    slack = MARGIN // 2  # glyphs may overhang their advance a little
    assert left >= slack and top >= slack
    assert right <= CARD_SIZE[0] - slack and bottom <= CARD_SIZE[1] - slack


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("豚肉抜きでお願いします", "ja"),
        ("请不要放猪肉", "zh"),
        ("돼지고기 빼 주세요", "ko"),
        ("من فضلك بدون لحم خنزير", "arabic"),
        ("בלי חזיר, בבקשה", "hebrew"),
        ("कृपया सूअर का मांस नहीं", "devanagari"),
        ("ขอไม่ใส่หมูครับ", "thai"),
        ("Без свинины, пожалуйста", "latin"),
        ("Χωρίς χοιρινό, παρακαλώ", "latin"),
        ("Sans porc, s'il vous plaît", "latin"),
    ],
)
def test_each_script_gets_a_font_with_its_glyphs(fonts: FontSet, text: str, script: str) -> None:
    assert script_of(text) == script
    font = fonts.font(text, 48)
    missing = font.getmask("\U000f0000").getbbox()  # a private-use code point: .notdef
    for char in text.replace(" ", "").replace(",", ""):
        assert font.getmask(char).getbbox() != missing or char.isspace(), char
    assert_inside_margins(ink_box(render_card(Phrase(text, None, "x"), fonts)))


def test_cjk_card_is_large_and_inside(fonts: FontSet) -> None:
    phrase = Phrase("豚肉抜きでお願いします", "Butaniku nuki de onegaishimasu", "Without pork")
    box = ink_box(render_card(phrase, fonts))
    assert_inside_margins(box)
    assert box[2] - box[0] > CARD_SIZE[0] // 2  # large: over half the card's width


def test_arabic_is_shaped_joined_glyphs_differ_from_isolated(fonts: FontSet) -> None:
    word = "سلام"
    font = fonts.font(word, 96)
    joined = font.getlength(word)
    isolated = sum(font.getlength(char) for char in word)
    assert abs(joined - isolated) > 10  # joining forms, not the letters side by side
    assert_inside_margins(ink_box(render_card(Phrase(word, "salam", "Peace"), fonts)))


def test_arabic_runs_right_to_left(fonts: FontSet) -> None:
    """The first word read is drawn on the right: a wide word first, a narrow one after."""
    font = fonts.font("مستشفى لا", 96)
    image = Image.new("L", (1200, 200), 255)
    ImageDraw.Draw(image).text((20, 20), "مستشفى لا", font=font, fill=0)
    first_word_width = font.getlength("مستشفى")
    box = ImageChops.invert(image).getbbox()
    right_part = ImageChops.invert(image.crop((box[2] - int(first_word_width), 0, box[2], 200)))
    left_part = ImageChops.invert(image.crop((box[0], 0, box[2] - int(first_word_width), 200)))
    # the right part holds the long word: more ink than the short "لا" on the left
    assert ImageStat.Stat(right_part).sum[0] > 2 * ImageStat.Stat(left_part).sum[0]


def test_a_long_phrase_wraps_and_shrinks_to_fit(fonts: FontSet) -> None:
    text = "Где находится платформа номер три и как купить билет до центра города? " * 3
    width, height = CARD_SIZE[0] - 2 * MARGIN, CARD_SIZE[1] - 2 * MARGIN
    font, lines = fit(text, fonts, width, height, MAX_TEXT_PX, 36)
    assert font.size < MAX_TEXT_PX and len(lines) > 2
    assert all(font.getlength(line) <= width for line in lines)
    assert " ".join(lines).split() == text.split()  # nothing lost, nothing cut inside a word
    assert_inside_margins(ink_box(render_card(Phrase(text, None, "x"), fonts)))


def test_text_without_spaces_wraps_between_characters_keeping_marks(fonts: FontSet) -> None:
    text = "ขอไม่ใส่หมูครับ" * 6
    font = fonts.font(text, 120)
    lines = wrap(text, font, 600)
    assert len(lines) > 1 and "".join(lines) == text
    assert all(line[0] not in "ิีึืุู่้๊๋ั็์" for line in lines)  # no line starts with a mark


def test_what_cannot_fit_at_the_smallest_size_ends_in_an_ellipsis(fonts: FontSet) -> None:
    text = "長い" * 400
    font, lines = fit(text, fonts, 400, 200, 60, 36)
    assert font.size == 36 and lines[-1].endswith("…")
    assert len(lines) * int(36 * 1.2) <= 200


def test_missing_fonts_are_named_with_the_packages(tmp_path: Path) -> None:
    (tmp_path / "NotoSans-Regular.ttf").write_bytes(b"")
    with pytest.raises(FontsMissing) as error:
        FontSet.find(tmp_path)
    message = str(error.value)
    assert FONT_FILES["cjk"] in message and "fonts-noto-cjk" in message
    assert FONT_FILES["latin"] not in message
    with pytest.raises(FontsMissing):
        FontSet.find(tmp_path / "nowhere")
