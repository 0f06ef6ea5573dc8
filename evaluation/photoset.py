"""The generated test set: photos of signs, departures boards, menus, opening hours, warning
labels and ticket machines in every language of evaluation.content, each with its ground
truth: the lines of text, the language, and the facts a traveller needs from it.

Everything follows from the seed (prices, colours, how the photo fails), nothing is
downloaded: the text is drawn with the Noto fonts the bot uses (bot/fonts.py; Debian's
fonts-noto-core and fonts-noto-cjk), then spoiled as phone photos are (evaluation.spoil).
A line under a sticker is not in `lines` but in `unreadable`: the honest answer says so.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.fonts import FontSet
from evaluation.content import LANGUAGES, Words
from evaluation.spoil import CONDITIONS, Scene, spoil

KINDS = ("sign", "board", "menu", "hours", "warning", "tickets")
# answers are asked in these languages, never in the photo's own (evaluation.score has
# their words for the facts)
ANSWER_LANGUAGES = ("en", "de", "fr", "es", "ru")
# amounts in euros, and what one euro is worth in each currency (to the rounding step)
MENU_EUROS = (13.4, 18.9, 7.5)
TICKET_EUROS = (2.9, 8.8)
EXCHANGE = {
    "€": (1, 0.1), "zł": (4, 0.5), "₺": (35, 5), "đ": (25_000, 1_000), "₽": (90, 10),
    "ج.م": (50, 5), "₪": (4, 1), "₹": (90, 10), "บาท": (35, 5), "¥": (7, 1), "NT$": (32, 5),
    "円": (150, 10), "원": (1_300, 500),
}  # fmt: skip
CJK_FACE_HANT = 3  # NotoSansCJK-Regular.ttc: JP, KR, SC, TC, HK


@dataclass(frozen=True)
class Fact:
    """What a traveller must learn from a line: a number (a price, a platform), a time of
    day ("09:00"), or a concept the answer names in its own language ("no_entry")."""

    kind: str  # "number", "time", "concept"
    value: str


@dataclass(frozen=True)
class Line:
    text: str
    facts: tuple[Fact, ...] = ()
    size: float = 1.0  # of the kind's text size
    column: int = 0  # 0: the reading start (left, or right in RTL); 1: the other side


@dataclass(frozen=True)
class Photo:
    id: str  # "de-menu"
    language: str
    script: str
    kind: str
    condition: str
    answer_language: str
    lines: tuple[str, ...]  # the readable lines, in reading order
    unreadable: tuple[str, ...]  # lines covered on purpose: their truth is "unreadable"
    facts: tuple[Fact, ...]  # of the readable lines
    image: bytes = field(repr=False)  # JPEG, as a phone sends it

    def truth(self) -> dict:
        return {
            "id": self.id,
            "language": self.language,
            "script": self.script,
            "kind": self.kind,
            "condition": self.condition,
            "answer_language": self.answer_language,
            "lines": list(self.lines),
            "unreadable": list(self.unreadable),
            "facts": [{"kind": f.kind, "value": f.value} for f in self.facts],
        }


def build_set(
    fonts: FontSet,
    *,
    seed: int = 0,
    languages: tuple[str, ...] | None = None,
    kinds: tuple[str, ...] | None = None,
    conditions: tuple[str, ...] | None = None,
) -> list[Photo]:
    """Every language × kind (or the ones asked for), one photo each. The condition of a
    photo rotates with language and kind, so each language meets six of them and each
    condition every kind."""
    photos = []
    for lang_index, words in enumerate(LANGUAGES):
        if languages and words.code not in languages:
            continue
        for kind_index, kind in enumerate(KINDS):
            if kinds and kind not in kinds:
                continue
            condition = CONDITIONS[(lang_index + kind_index) % len(CONDITIONS)]
            if conditions and condition not in conditions:
                continue
            rng = random.Random(f"{seed}-{words.code}-{kind}")
            answer = [a for a in ANSWER_LANGUAGES if a != words.code.split("-")[0]]
            photos.append(
                make_photo(
                    fonts, words, kind, condition, answer[(lang_index + kind_index) % 4], rng
                )
            )
    return photos


def make_photo(
    fonts: FontSet, words: Words, kind: str, condition: str, answer_language: str, rng
) -> Photo:
    lines = LINES[kind](words, rng)
    scene = draw_card(fonts, words, kind, lines, rng)
    covered = spoil(scene, condition, rng)
    image = scene.image
    readable = [line for i, line in enumerate(lines) if i not in covered]
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return Photo(
        id=f"{words.code}-{kind}",
        language=words.code,
        script=words.script,
        kind=kind,
        condition=condition,
        answer_language=answer_language,
        lines=tuple(line.text for line in readable),
        unreadable=tuple(lines[i].text for i in sorted(covered)),
        facts=tuple(fact for line in readable for fact in line.facts),
        image=out.getvalue(),
    )


def _price(words: Words, euros: float) -> tuple[str, Fact]:
    rate, step = EXCHANGE[words.currency.replace("{}", "").strip()]
    amount = round(euros * rate / step) * step
    if step < 1:
        text = f"{amount:.2f}".replace(".", words.decimal)
        value = f"{amount:.2f}"
    else:
        thousands = "." if words.decimal == "," else ","
        text = f"{int(amount):,}".replace(",", thousands)
        value = str(int(amount))
    return words.currency.format(text), Fact("number", value)


def _concept(name: str) -> tuple[Fact, ...]:
    return (Fact("concept", name),)


def sign_lines(words: Words, rng) -> list[Line]:
    return [
        Line(words.exit, _concept("exit"), 1.3),
        Line(words.no_entry, _concept("no_entry"), 0.9),
    ]


def board_lines(words: Words, rng) -> list[Line]:
    lines = [Line(words.departures, (), 1.2)]
    hour = rng.randint(6, 19)
    for city, platform in zip(words.cities, rng.sample(range(2, 15), 3), strict=True):
        hour, minute = hour + rng.randint(0, 1), rng.choice(range(0, 60, 5))
        time = f"{hour:02d}:{minute:02d}"
        where = words.platform.format(platform) if "{}" in words.platform else None
        where = where or f"{words.platform} {platform}"
        facts = (Fact("time", time), Fact("number", str(platform)))
        lines.append(Line(f"{time}  {city}  {where}", facts, 0.8))
    return lines


def menu_lines(words: Words, rng) -> list[Line]:
    lines = [Line(words.menu, (), 1.3)]
    for dish, euros in zip(words.dishes, MENU_EUROS, strict=True):
        price, fact = _price(words, euros * rng.uniform(0.9, 1.1))
        lines += [Line(dish, (), 0.8), Line(price, (fact,), 0.8, column=1)]
    lines.append(Line(words.contains_peanuts, _concept("peanuts"), 0.6))
    return lines


def hours_lines(words: Words, rng) -> list[Line]:
    opens, closes = rng.choice((8, 9, 10)), rng.choice((17, 18, 19, 20))
    weekday = (f"{opens:02d}:00", f"{closes:02d}:00")
    saturday = (f"{opens + 1:02d}:00", "14:00")
    return [
        Line(words.opening_hours, (), 1.1),
        Line(
            f"{words.mon_fri}  {weekday[0]}{words.dash}{weekday[1]}",
            tuple(Fact("time", t) for t in weekday),
        ),
        Line(
            f"{words.saturday}  {saturday[0]}{words.dash}{saturday[1]}",
            tuple(Fact("time", t) for t in saturday),
        ),
        Line(words.sunday_closed, _concept("closed_day")),
    ]


def warning_lines(words: Words, rng) -> list[Line]:
    return [
        Line(words.danger, _concept("danger"), 1.3),
        Line(words.high_voltage, _concept("high_voltage")),
        Line(words.do_not_touch, _concept("do_not_touch"), 0.9),
    ]


def ticket_lines(words: Words, rng) -> list[Line]:
    lines = [Line(words.tickets, (), 1.2)]
    for name, euros in zip((words.single_ticket, words.day_ticket), TICKET_EUROS, strict=True):
        price, fact = _price(words, euros)
        lines += [Line(name, (), 0.8), Line(price, (fact,), 0.8, column=1)]
    lines.append(Line(words.cash_only, _concept("cash_only"), 0.7))
    return lines


LINES: dict[str, Callable[[Words, random.Random], list[Line]]] = {
    "sign": sign_lines,
    "board": board_lines,
    "menu": menu_lines,
    "hours": hours_lines,
    "warning": warning_lines,
    "tickets": ticket_lines,
}
# (background, card, text) colours of each kind
COLOURS = {
    "sign": ((120, 140, 160), (20, 90, 160), (255, 255, 255)),
    "board": ((70, 70, 80), (15, 20, 40), (255, 210, 60)),
    "menu": ((110, 90, 70), (246, 240, 226), (40, 30, 20)),
    "hours": ((150, 150, 140), (250, 250, 250), (20, 20, 20)),
    "warning": ((100, 110, 100), (250, 200, 0), (0, 0, 0)),
    "tickets": ((90, 100, 110), (225, 230, 235), (10, 40, 90)),
}
CARD_SIZES = {"menu": (720, 960), "tickets": (760, 720), "hours": (820, 620)}


def font_for(fonts: FontSet, words: Words, text: str, size: int) -> ImageFont.FreeTypeFont:
    if words.code == "zh-Hant":  # FontSet's "zh" is the simplified face
        return ImageFont.truetype(
            fonts.paths["cjk"], size, index=CJK_FACE_HANT, layout_engine=ImageFont.Layout.RAQM
        )
    return fonts.font(text, size)


def draw_card(fonts: FontSet, words: Words, kind: str, lines: list[Line], rng) -> Scene:
    """The card (sign, menu ...) on a plain background, upright and sharp; each line's box."""
    background, card_colour, ink = COLOURS[kind]
    width, height = CARD_SIZES.get(kind, (900, 560))
    if words.vertical and kind in ("sign", "warning"):
        width, height = 560, 900
    jitter = tuple(min(255, max(0, c + rng.randint(-12, 12))) for c in background)
    image = Image.new("RGB", (width + 240, height + 240), jitter)
    draw = ImageDraw.Draw(image)
    card = (120, 120, 120 + width, 120 + height)
    draw.rounded_rectangle(card, radius=24, fill=card_colour, outline=(30, 30, 30), width=4)
    if words.vertical and kind in ("sign", "warning"):
        boxes = _draw_vertical(fonts, words, draw, card, lines, ink)
    else:
        boxes = _draw_rows(fonts, words, draw, card, lines, ink)
    return Scene(image, boxes, card)


def _draw_rows(fonts, words, draw, card, lines, ink) -> list[tuple[int, int, int, int]]:
    left, top, right, bottom = card
    base = min(64, int((bottom - top) / (sum(line.size for line in lines) * 1.7 + 0.5)))
    boxes, y = [], top + base // 2
    margin = 48
    for index, line in enumerate(lines):
        size = int(base * line.size)
        font = font_for(fonts, words, line.text, size)
        at_end = (line.column == 1) != words.rtl
        x, anchor = (right - margin, "ra") if at_end else (left + margin, "la")
        if line.column == 1:
            y -= int(lines[index - 1].size * base * 1.7)  # beside the line before
        if words.rtl:  # raqm orders the runs; the RTL fonts have digits
            draw.text((x, y), line.text, font=font, fill=ink, anchor=anchor)
            boxes.append(draw.textbbox((x, y), line.text, font=font, anchor=anchor))
        else:
            boxes.append(_draw_runs(fonts, words, draw, (x, y), line.text, size, ink, anchor))
        y += int(size * 1.7)
    return boxes


def _draw_runs(fonts, words, draw, xy, text, size, ink, anchor) -> tuple[int, int, int, int]:
    """A left-to-right line in runs, each in a font that has its glyphs: Noto Sans Thai has
    no digits, Noto Sans (Latin) has them."""
    main = font_for(fonts, words, text, size)
    latin = fonts.font("0", size)
    runs: list[tuple[ImageFont.FreeTypeFont, str]] = []
    for char in text:
        font = main if char.isspace() or _has_glyph(main, char) else latin
        if runs and runs[-1][0] is font:
            runs[-1] = (font, runs[-1][1] + char)
        else:
            runs.append((font, char))
    width = sum(draw.textlength(run, font=font) for font, run in runs)
    x, y = xy
    x = x - width if anchor == "ra" else x
    left = x
    for font, run in runs:
        draw.text((x, y), run, font=font, fill=ink, anchor="la")
        x += draw.textlength(run, font=font)
    return (int(left), y, int(x), y + size)


@functools.cache
def _notdef(font: ImageFont.FreeTypeFont) -> bytes:
    return bytes(font.getmask("\uffff"))


def _has_glyph(font: ImageFont.FreeTypeFont, char: str) -> bool:
    return char.isspace() or bytes(font.getmask(char)) != _notdef(font)


def _draw_vertical(fonts, words, draw, card, lines, ink) -> list[tuple[int, int, int, int]]:
    """Top to bottom, columns from right to left, as Japanese signs are written."""
    _, top, right, bottom = card
    size = min(90, int((bottom - top - 80) / max(len(line.text) for line in lines)))
    boxes, x = [], right - 60 - size
    for line in lines:
        font = font_for(fonts, words, line.text, size)
        y = top + 40
        for char in line.text:
            draw.text((x + size // 2, y), char, font=font, fill=ink, anchor="mt")
            y += int(size * 1.05)
        boxes.append((x, top + 40, x + size, y))
        x -= int(size * 1.6)
    return boxes


def save_set(photos: list[Photo], directory: Path) -> None:
    """The photos as JPEG files and their truth as truth.json, to look at."""
    import json

    directory.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        (directory / f"{photo.id}.jpg").write_bytes(photo.image)
    truth = [photo.truth() for photo in photos]
    (directory / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n")
