"""The translation drawn on the photo: each region the model found (inference/regions.py) is
covered with a colour taken from around it and its translation is written in, as large as
fits the box. Where even the smallest legible size does not fit, the box gets a number and
the translation goes into a legend under the photo: small text on a menu stays readable
without covering its neighbours. The font covers the translation's script (bot/fonts.py;
raqm joins Arabic and lays out right-to-left lines).

The model's boxes are rough; with a text line detector (bot/text_lines.py) each box is
snapped to the detected lines inside it (grown by SNAP_MARGIN), never beyond that margin.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageStat

from bot.fonts import FontSet, script_of
from bot.phrase_card import LINE_SPACING, wrap
from bot.text_lines import LineBox
from inference import Region

BOX_SCALE = 1000  # Gemma's box_2d units (inference/regions.py)
MIN_TEXT_PX = 14  # the smallest text drawn in a box, on a photo up to 1000 px a side ...
MIN_TEXT_SHARE = 1 / 70  # ... and this share of the shorter side on a larger one
MAX_TEXT_PX = 160
PADDING = 2  # px inside a box around its text
RING_PX = 4  # the band around a box whose colours fill it
SNAP_MARGIN = 0.5  # of the box's height: how far outside the model's box a line may reach
LEGEND_SHARE = 1 / 40  # legend text size, of the photo's width
# Telegram's sendPhoto: width + height at most 10,000 px, one side at most 20 times the other
MAX_SIDES_SUM = 10_000
MAX_RATIO = 20
JPEG_QUALITY = 90

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


@dataclass(frozen=True)
class Drawn:
    """What the picture shows: how many regions were written in and how many are numbered
    in the legend (for logs)."""

    picture: bytes  # JPEG
    num_in_place: int
    num_in_legend: int


def to_pixels(box: tuple[int, int, int, int], width: int, height: int) -> Box:
    """Gemma's (ymin, xmin, ymax, xmax) in 0..1000 as pixels of a `width` x `height` photo."""
    y0, x0, y1, x1 = box
    return (
        x0 * width // BOX_SCALE,
        y0 * height // BOX_SCALE,
        max(x1 * width // BOX_SCALE, x0 * width // BOX_SCALE + 1),
        max(y1 * height // BOX_SCALE, y0 * height // BOX_SCALE + 1),
    )


def snap(box: Box, lines: Sequence[LineBox]) -> Box:
    """`box` tightened or widened to the detected lines whose centre lies in it (grown by
    SNAP_MARGIN of its height); `box` itself where none does."""
    x0, y0, x1, y1 = box
    margin = SNAP_MARGIN * (y1 - y0)
    gx0, gy0, gx1, gy1 = x0 - margin, y0 - margin, x1 + margin, y1 + margin
    inside = [
        line
        for line in lines
        if gx0 <= (line.x0 + line.x1) / 2 <= gx1 and gy0 <= (line.y0 + line.y1) / 2 <= gy1
    ]
    if not inside:
        return box
    return (
        int(max(gx0, min(line.x0 for line in inside))),
        int(max(gy0, min(line.y0 for line in inside))),
        int(min(gx1, max(line.x1 for line in inside))),
        int(min(gy1, max(line.y1 for line in inside))),
    )


def render_overlay(
    photo: bytes, regions: Sequence[Region], fonts: FontSet, lines: Sequence[LineBox] = ()
) -> Drawn:
    """The photo with each region's translation drawn in (see the module's docstring)."""
    with Image.open(io.BytesIO(photo)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    min_px = max(MIN_TEXT_PX, round(min(width, height) * MIN_TEXT_SHARE))
    rough = [to_pixels(region.box, width, height) for region in regions]
    exact = [snap(box, lines) for box in rough] if lines else rough
    # the background around each box, before anything is drawn
    fills = [_surrounding_colour(image, box) for box in exact]
    draw = ImageDraw.Draw(image)
    fitter = _Fitter(fonts)
    legend: list[str] = []
    for region, box, model_box, fill in zip(regions, exact, rough, fills, strict=True):
        # where the text does not fit the exact lines, the model's (larger) box may hold it
        for candidate in dict.fromkeys((box, _union(box, model_box))):
            fitted = fitter.fit(region.translation, *_inner(candidate), min_px)
            if fitted is not None:
                draw.rectangle(candidate, fill=fill)
                centre = ((candidate[0] + candidate[2]) // 2, (candidate[1] + candidate[3]) // 2)
                _draw_lines(draw, fitted, centre, _ink(fill))
                break
        else:
            draw.rectangle(box, fill=fill)
            legend.append(region.translation)
            _draw_label(draw, fitter, str(len(legend)), box, (width, height), min_px)
    if legend:
        image = _with_legend(image, legend, fitter, min_px)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return Drawn(out.getvalue(), len(regions) - len(legend), len(legend))


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _inner(box: Box) -> tuple[int, int]:
    """The width and height text may take in `box`."""
    return box[2] - box[0] - 2 * PADDING, box[3] - box[1] - 2 * PADDING


class _Fitter:
    """Fonts by script and size, loaded once per picture (a CJK collection is large)."""

    def __init__(self, fonts: FontSet) -> None:
        self._fonts = fonts
        self._cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}

    def font(self, text: str, size: int) -> ImageFont.FreeTypeFont:
        key = (script_of(text), size)
        if key not in self._cache:
            self._cache[key] = self._fonts.font(text, size)
        return self._cache[key]

    def fit(
        self, text: str, width: int, height: int, min_px: int
    ) -> tuple[ImageFont.FreeTypeFont, list[str]] | None:
        """The largest size, from `min_px` up, at which `text` wrapped to `width` fits
        `height`, with its lines; None when it does not fit even at `min_px`."""
        best = None
        low, high = min_px, min(MAX_TEXT_PX, int(height / LINE_SPACING))
        while low <= high:  # the fit only gets worse as the size grows
            size = (low + high) // 2
            font = self.font(text, size)
            lines = wrap(text, font, max(width, 1))
            fits = all(font.getlength(line) <= width for line in lines)
            if fits and len(lines) * int(size * LINE_SPACING) <= height:
                best, low = (font, lines), size + 1
            else:
                high = size - 1
        return best


def _surrounding_colour(image: Image.Image, box: Box) -> tuple[int, int, int]:
    """The median colour of a band around `box`: the sign's background, not its letters
    (a neutral grey where the box fills the whole photo)."""
    x0, y0, x1, y1 = box
    width, height = image.size
    bands = [
        (x0 - RING_PX, y0 - RING_PX, x1 + RING_PX, y0),
        (x0 - RING_PX, y1, x1 + RING_PX, y1 + RING_PX),
        (x0 - RING_PX, y0, x0, y1),
        (x1, y0, x1 + RING_PX, y1),
    ]
    pixels: list[tuple[int, int, int]] = []
    for left, top, right, bottom in bands:
        left, top = max(0, left), max(0, top)
        right, bottom = min(width, right), min(height, bottom)
        if right > left and bottom > top:
            pixels.extend(image.crop((left, top, right, bottom)).get_flattened_data())
    if not pixels:
        return (128, 128, 128)
    band = Image.new("RGB", (len(pixels), 1))
    band.putdata(pixels)
    return tuple(int(v) for v in ImageStat.Stat(band).median)  # type: ignore[return-value]


def _ink(fill: tuple[int, int, int]) -> str:
    """Black on a light fill, white on a dark one."""
    red, green, blue = fill
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else "white"


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    fitted: tuple[ImageFont.FreeTypeFont, list[str]],
    centre: tuple[int, int],
    ink: str,
) -> None:
    """Lines centred on `centre`; raqm finds each line's direction."""
    font, lines = fitted
    line_height = int(font.size * LINE_SPACING)
    top = centre[1] - line_height * len(lines) // 2
    for number, line in enumerate(lines):
        y = top + number * line_height + line_height // 2
        draw.text((centre[0], y), line, font=font, fill=ink, anchor="mm")


def _draw_label(
    draw: ImageDraw.ImageDraw,
    fitter: _Fitter,
    label: str,
    box: Box,
    size: tuple[int, int],
    min_px: int,
) -> None:
    """The legend number of a box too small for its text: a dark tag at the box's top left,
    at the smallest legible size even where that is larger than the box, kept in the photo."""
    font = fitter.font(label, min_px)
    tag_w = int(font.getlength(label)) + 2 * PADDING + 4
    tag_h = int(min_px * LINE_SPACING) + 2 * PADDING
    left = min(max(0, box[0]), size[0] - tag_w)
    top = min(max(0, box[1]), size[1] - tag_h)
    draw.rectangle((left, top, left + tag_w, top + tag_h), fill=(20, 20, 20))
    draw.text((left + tag_w // 2, top + tag_h // 2), label, font=font, fill="white", anchor="mm")


def _with_legend(
    image: Image.Image, legend: list[str], fitter: _Fitter, min_px: int
) -> Image.Image:
    """`image` with a white band under it listing each numbered translation; lines that
    would make the picture taller than Telegram takes are left out, the last one kept
    ending in "…"."""
    width = image.width
    size = max(min_px, round(width * LEGEND_SHARE))
    margin = size
    line_height = int(size * LINE_SPACING)
    max_height = min(MAX_SIDES_SUM - width, (MAX_RATIO - 1) * width)
    room = max(1, (max_height - image.height - 2 * margin) // line_height)
    entries = []
    for number, text in enumerate(legend, start=1):
        entry = f"{number}. {text}"
        font = fitter.font(entry, size)
        lines = wrap(entry, font, width - 2 * margin)
        if len(lines) > room or (len(lines) == room and number < len(legend)):
            entries.append((font, [*lines[: room - 1], "…"] if room > 1 else ["…"]))
            break
        entries.append((font, lines))
        room -= len(lines)
    band = 2 * margin + line_height * sum(len(lines) for _, lines in entries)
    canvas = Image.new("RGB", (width, image.height + band), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = image.height + margin
    for font, lines in entries:
        for line in lines:
            # raqm lays a right-to-left line out on its own; it starts at the right margin
            rtl = script_of(line) in ("arabic", "hebrew")
            x, anchor = (width - margin, "rm") if rtl else (margin, "lm")
            draw.text((x, y + line_height // 2), line, font=font, fill="black", anchor=anchor)
            y += line_height
    return canvas
