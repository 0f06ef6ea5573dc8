"""The translation drawn on the photo, with the real Noto fonts, Pillow's raqm layout and
the real PP-OCRv4 text detector on signs drawn here: given boxes (CJK, Arabic, a box smaller
than its text, boxes outside the photo or swapped), the fill taken from around a box, and
rough boxes snapped to the detected lines."""

from __future__ import annotations

import asyncio
import io
import itertools
import sys

import pytest
from PIL import Image, ImageChops, ImageDraw

from bot.fonts import FontSet
from bot.overlay import MIN_TEXT_PX, render_overlay, snap, to_pixels
from bot.settings import Settings
from bot.text_lines import LineBox, SharedDetector, TextLineDetector, load_detector
from inference import Region, read_regions

SIZE = (800, 600)
BACKGROUND = (200, 30, 30)  # a red sign


@pytest.fixture(scope="module")
def fonts() -> FontSet:
    return FontSet.find(Settings(_env_file=None).fonts_dir)


@pytest.fixture(scope="module")
def detector() -> TextLineDetector:
    found = load_detector()
    assert found is not None, "rapidocr-onnxruntime is a dependency: it must load here"
    return found


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def drawn_sign(fonts: FontSet, lines: list[tuple[str, tuple[int, int], int]]) -> Image.Image:
    """White text on a red sign: (text, top-left, size) each."""
    image = Image.new("RGB", SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    for text, origin, size in lines:
        draw.text(origin, text, font=fonts.font(text, size), fill="white")
    return image


def changed_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int] | None:
    """Where `after` differs from `before` by more than JPEG noise."""
    diff = ImageChops.difference(before, after.crop((0, 0, *before.size))).convert("L")
    return diff.point(lambda v: 255 if v > 60 else 0).getbbox()


def picture(drawn_bytes: bytes) -> Image.Image:
    return Image.open(io.BytesIO(drawn_bytes)).convert("RGB")


def region(box: tuple[int, int, int, int], translation: str) -> Region:
    return Region(box=box, text="", translation=translation)


@pytest.mark.parametrize(
    "translation",
    ["出口", "出口はこちら", "비상구", "Notausgang", "مخرج الطوارئ", "יציאה"],
)
def test_a_translation_is_drawn_inside_its_box(fonts: FontSet, translation: str) -> None:
    photo = drawn_sign(fonts, [("EXIT", (200, 200), 90)])
    gemma_box = (300, 200, 550, 700)  # ymin, xmin, ymax, xmax of 0..1000
    drawn = render_overlay(jpeg(photo), [region(gemma_box, translation)], fonts)
    assert (drawn.num_in_place, drawn.num_in_legend) == (1, 0)
    result = picture(drawn.picture)
    assert result.size == SIZE  # no legend
    left, top, right, bottom = to_pixels(gemma_box, *SIZE)
    inside = result.crop((left + 4, top + 4, right - 4, bottom - 4))
    colours = inside.getcolors(maxcolors=1 << 16) or []
    # covered with the sign's red (the band around the box), and white text written in it
    fill = max(colours)[1]
    assert all(abs(a - b) < 40 for a, b in zip(fill, BACKGROUND, strict=True))
    assert any(min(c) > 200 for _, c in colours), "no white text in the box"
    # nothing drawn outside the box
    outside = changed_box(photo, result)
    assert outside is not None
    assert outside[0] >= left - 1 and outside[2] <= right + 1
    assert outside[1] >= top - 1 and outside[3] <= bottom + 1


def test_arabic_is_drawn_right_to_left(fonts: FontSet) -> None:
    """The first word read is drawn on the right: a wide word first, a narrow one after
    (raqm lays the line out; bot/fonts.py checks it joins the letters)."""
    photo = Image.new("RGB", SIZE, "white")
    text = "مستشفى لا"
    drawn = render_overlay(jpeg(photo), [region((400, 0, 600, 1000), text)], fonts)
    ink = picture(drawn.picture).convert("L").point(lambda v: 255 if v < 128 else 0)
    columns = [x for x in range(ink.width) if ink.crop((x, 0, x + 1, ink.height)).getbbox()]
    gaps = [(b - a, a, b) for a, b in itertools.pairwise(columns) if b - a > 1]
    _, gap_left, gap_right = max(gaps)  # the space between the words
    # the wide word, read first, is on the right of the space
    assert columns[-1] - gap_right > 2 * (gap_left - columns[0])


def test_a_box_smaller_than_its_text_gets_a_number_and_a_legend(fonts: FontSet) -> None:
    photo = drawn_sign(fonts, [("ABC", (100, 100), 20)])
    tiny = (160, 120, 190, 160)  # 24 x 18 px
    long = "Hähnchen mit Ingwer und Frühlingszwiebeln, scharf"
    drawn = render_overlay(
        jpeg(photo), [region(tiny, long), region((500, 100, 800, 900), "Ja")], fonts
    )
    assert (drawn.num_in_place, drawn.num_in_legend) == (1, 1)
    result = picture(drawn.picture)
    assert result.width == SIZE[0] and result.height > SIZE[1] + 2 * MIN_TEXT_PX
    legend = result.crop((0, SIZE[1], *result.size))
    assert ImageChops.invert(legend.convert("L")).getbbox() is not None, "legend is empty"
    # the number's tag is drawn at the box, legibly large even where the box is not
    label = changed_box(photo, result)
    assert label is not None and label[3] - label[1] >= MIN_TEXT_PX


def test_boxes_outside_the_photo_swapped_or_negative_are_drawn_within_it(fonts: FontSet) -> None:
    reply = (
        '```json\n{"regions": ['
        '{"box_2d": [-100, -100, 200, 300], "text": "a", "translation": "negative"},'
        '{"box_2d": [900, 800, 1400, 2000], "text": "b", "translation": "outside"},'
        '{"box_2d": [700, 600, 400, 100], "text": "c", "translation": "swapped"},'
        '{"box_2d": [1200, 0, 1300, 10], "text": "d", "translation": "gone"}'
        "]}\n```"
    )  # a scripted model reply
    regions = read_regions(reply).regions
    assert [r.translation for r in regions] == ["negative", "outside", "swapped"]
    photo = drawn_sign(fonts, [])
    drawn = render_overlay(jpeg(photo), regions, fonts)
    assert drawn.num_in_place + drawn.num_in_legend == 3
    assert picture(drawn.picture).width == SIZE[0]


def test_rough_boxes_snap_to_the_lines_the_real_detector_finds(
    fonts: FontSet, detector: TextLineDetector
) -> None:
    photo = drawn_sign(fonts, [("AUSGANG", (120, 100), 70), ("出口 東口", (120, 330), 70)])
    truth = [
        ImageDraw.Draw(photo).textbbox((120, 100), "AUSGANG", font=fonts.font("A", 70)),
        ImageDraw.Draw(photo).textbbox((120, 330), "出口 東口", font=fonts.font("出口", 70)),
    ]
    lines = detector.detect(photo)
    assert len(lines) == 2
    rough = [(90, 95, 420, 200), (150, 315, 380, 440)]  # a model's boxes, loose (px)
    for box, expected in zip(rough, truth, strict=True):
        snapped = snap(box, lines)
        assert iou(snapped, expected) > 0.7, (snapped, expected)
        assert iou(box, expected) < 0.6  # it was rough


def test_a_box_with_no_detected_line_near_it_stays_as_the_model_gave_it() -> None:
    lines = [LineBox(10, 10, 100, 40)]
    assert snap((300, 300, 400, 350), lines) == (300, 300, 400, 350)
    # a line reaching far beyond the box is cut at the box's margin
    wide = [LineBox(0, 100, 800, 130)]
    assert snap((300, 98, 400, 128), wide) == (285, 100, 415, 130)


def test_the_detector_sees_a_12_megapixel_photo_scaled_and_answers_in_its_pixels(
    fonts: FontSet, detector: TextLineDetector
) -> None:
    photo = Image.new("RGB", (4032, 3024), "white")
    draw = ImageDraw.Draw(photo)
    draw.text((800, 1200), "PLATFORM 3", font=fonts.font("P", 300), fill="black")
    expected = draw.textbbox((800, 1200), "PLATFORM 3", font=fonts.font("P", 300))
    (line,) = detector.detect(photo)
    assert iou((line.x0, line.y0, line.x1, line.y1), expected) > 0.7


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_text_too_long_for_the_exact_line_takes_the_models_larger_box(
    fonts: FontSet, detector: TextLineDetector
) -> None:
    photo = drawn_sign(fonts, [("EXIT", (300, 280), 24)])
    lines = detector.detect(photo)
    assert len(lines) == 1
    model_box = (400, 300, 560, 700)  # around the word, generous
    drawn = render_overlay(
        jpeg(photo), [region(model_box, "Notausgang, bitte freihalten")], fonts, lines
    )
    assert (drawn.num_in_place, drawn.num_in_legend) == (1, 0)
    assert picture(drawn.picture).size == SIZE


def test_a_long_legend_on_a_narrow_photo_stays_within_telegrams_photo_limits(
    fonts: FontSet,
) -> None:
    photo = Image.new("RGB", (300, 2000), "white")
    long = "Schweinebauch, geschmort in Sojasauce mit Ingwer und Frühlingszwiebeln, dazu Reis"
    regions = [region((i * 24, 0, i * 24 + 3, 20), f"{long} {i}") for i in range(40)]
    drawn = render_overlay(jpeg(photo), regions, fonts)
    assert drawn.num_in_legend == 40
    width, height = picture(drawn.picture).size
    assert width == 300 and height > 2000
    assert width + height <= 10_000 and height <= 20 * width


def test_without_the_detector_the_models_boxes_are_drawn(
    fonts: FontSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rapidocr-onnxruntime not installed (an import that fails, as on Python 3.13)."""
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    assert load_detector() is None
    photo = jpeg(drawn_sign(fonts, [("EXIT", (200, 200), 90)]))
    lines = asyncio.run(SharedDetector().detect(photo))
    assert lines == []
    drawn = render_overlay(photo, [region((300, 200, 550, 700), "Ausgang")], fonts, lines)
    assert drawn.num_in_place == 1
