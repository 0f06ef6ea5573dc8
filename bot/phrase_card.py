"""A phrase as a picture to hold up to staff: the phrase alone, as large as it fits, its
romanization smaller under it. Lines are wrapped between words, or between characters in
scripts written without spaces (Chinese, Japanese, Thai), never inside a character with its
marks; the size shrinks until every line fits; what still does not fit at the smallest size
ends in "…"."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from bot.fonts import FontSet, is_mark
from inference import Phrase

CARD_SIZE = (1280, 720)
MARGIN = 64
MAX_TEXT_PX = 180
MIN_TEXT_PX = 36
MAX_ROMANIZATION_PX = 64
MIN_ROMANIZATION_PX = 24
LINE_SPACING = 1.2
ROMANIZATION_SHARE = 0.28  # of the height under the margins, when there is a romanization
ELLIPSIS = "…"


def render_card(phrase: Phrase, fonts: FontSet) -> bytes:
    """The card as PNG bytes."""
    width, height = CARD_SIZE
    image = Image.new("RGB", CARD_SIZE, "white")
    draw = ImageDraw.Draw(image)
    box_width, box_height = width - 2 * MARGIN, height - 2 * MARGIN
    text_height = box_height
    if phrase.romanization:
        text_height = int(box_height * (1 - ROMANIZATION_SHARE))
    font, lines = fit(phrase.text, fonts, box_width, text_height, MAX_TEXT_PX, MIN_TEXT_PX)
    top = MARGIN + (text_height - _block_height(font, len(lines))) // 2
    _draw_lines(draw, lines, font, top, "black")
    if phrase.romanization:
        space = box_height - text_height
        small, notes = fit(
            phrase.romanization, fonts, box_width, space, MAX_ROMANIZATION_PX, MIN_ROMANIZATION_PX
        )
        _draw_lines(draw, notes, small, MARGIN + text_height, "dimgray")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def fit(
    text: str, fonts: FontSet, width: int, height: int, max_px: int, min_px: int
) -> tuple[ImageFont.FreeTypeFont, list[str]]:
    """The largest font size at which `text`, wrapped to `width`, fits `height`, and its
    lines; at `min_px` the lines that fit, the last one ended with "…"."""
    size = max_px
    while True:
        font = fonts.font(text, size)
        lines = wrap(text, font, width)
        if _block_height(font, len(lines)) <= height:
            return font, lines
        if size == min_px:
            return font, _cut(lines, font, width, max(1, _lines_that_fit(font, height)))
        size = max(min_px, int(size * 0.9))


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy lines no wider than `width`: between words, or between characters where a
    word alone is too wide or the script has no spaces."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
            line = ""
        for cluster in _clusters(word):
            if line and font.getlength(line + cluster) > width:
                lines.append(line)
                line = ""
            line += cluster
    if line:
        lines.append(line)
    return lines


def _clusters(word: str) -> list[str]:
    """Characters with the combining marks that follow them."""
    clusters: list[str] = []
    for char in word:
        if clusters and is_mark(char):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _cut(lines: list[str], font: ImageFont.FreeTypeFont, width: int, count: int) -> list[str]:
    if len(lines) <= count:
        return lines
    kept = lines[:count]
    last = kept[-1]
    while last and font.getlength(last + ELLIPSIS) > width:
        last = last[:-1]
    kept[-1] = last.rstrip() + ELLIPSIS
    return kept


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    return int(font.size * LINE_SPACING)


def _block_height(font: ImageFont.FreeTypeFont, num_lines: int) -> int:
    return _line_height(font) * num_lines


def _lines_that_fit(font: ImageFont.FreeTypeFont, height: int) -> int:
    return height // _line_height(font)


def _draw_lines(
    draw: ImageDraw.ImageDraw, lines: list[str], font: ImageFont.FreeTypeFont, top: int, fill: str
) -> None:
    """Each line centred; raqm finds each line's direction (Arabic and Hebrew right to left)."""
    centre = CARD_SIZE[0] // 2
    line_height = _line_height(font)
    for number, line in enumerate(lines):
        y = top + number * line_height + line_height // 2
        draw.text((centre, y), line, font=font, fill=fill, anchor="mm")
