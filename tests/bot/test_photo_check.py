"""The quick photo check on generated photos: drawn text in a real font, blurred with
Pillow's GaussianBlur, darkened, washed out, shrunk; sharp ones pass, clearly bad ones are
flagged, and a sharp photo without text raises no alarm."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageEnhance, ImageFilter
from transformers.models.gemma4.image_processing_pil_gemma4 import (
    get_aspect_ratio_preserving_size,
)

from bot.photo_check import check_photo, measure, model_size
from inference import normalize_image
from tests.conftest import png_bytes, small_photo
from tools.samples import draw_menu, draw_scene, draw_sign, draw_text_page

W, H = 2048, 1536  # about what normalize_image makes of a 12 MP phone photo (2016x1512)


def page(font_px: int = 40, size: tuple[int, int] = (W, H)) -> Image.Image:
    return draw_text_page(*size, font_px=font_px)


def darkened(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(factor)


def washed_out(image: Image.Image, amount: float) -> Image.Image:
    return Image.blend(image, Image.new("RGB", image.size, "white"), amount)


@pytest.mark.parametrize("soft_tokens", [70, 140, 280, 560, 1120])
@pytest.mark.parametrize("size", [(4032, 3024), (2048, 1536), (1536, 2048), (320, 240), (16, 900)])
def test_the_model_size_is_the_image_processors(soft_tokens: int, size: tuple[int, int]) -> None:
    width, height = size
    expected = get_aspect_ratio_preserving_size(height, width, 16, soft_tokens * 9, 3)
    assert model_size(width, height, soft_tokens) == (expected[1], expected[0])


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("page 24 px", page(24)),
        ("page 40 px", page(40)),
        ("page 64 px", page(64)),
        ("page 28 px, 1024 x 768", page(28, (1024, 768))),
        ("page 40 px, slightly soft", page(40).filter(ImageFilter.GaussianBlur(2))),
        ("page 40 px, dim", darkened(page(40), 0.5)),
        ("page 40 px, bright", washed_out(page(40), 0.5)),
        ("scene without text", draw_scene(W, H)),
        ("sign", draw_sign(640, 480)),
        ("menu", draw_menu(480, 640)),
        ("small photo", Image.open(io.BytesIO(normalize_image(small_photo())))),
        ("one letter on white", Image.open(io.BytesIO(normalize_image(small_photo("A"))))),
        ("blank white", Image.new("RGB", (200, 120), "white")),
    ],
)
def test_good_photos_pass(name: str, image: Image.Image) -> None:
    assert measure(image).problem() is None, (name, measure(image))


@pytest.mark.parametrize(
    ("name", "image", "problem"),
    [
        ("page, blur 6", page(40).filter(ImageFilter.GaussianBlur(6)), "blurry"),
        ("page, blur 8", page(40).filter(ImageFilter.GaussianBlur(8)), "blurry"),
        ("small page, blur 4", page(28, (1024, 768)).filter(ImageFilter.GaussianBlur(4)), "blurry"),
        ("scene, blur 8", draw_scene(W, H).filter(ImageFilter.GaussianBlur(8)), "blurry"),
        ("page, 10 % light", darkened(page(40), 0.1), "too_dark"),
        ("page, 20 % light", darkened(page(40), 0.2), "too_dark"),
        ("scene, 20 % light", darkened(draw_scene(W, H), 0.2), "too_dark"),
        ("page, washed out 80 %", washed_out(page(40), 0.8), "overexposed"),
        ("page, washed out 90 %", washed_out(page(40), 0.9), "overexposed"),
        ("all black: the lens covered, a dark room", Image.new("RGB", (800, 600)), "too_dark"),
        ("page, 8 px text", page(8), "text_too_small"),
        ("page, 10 px text", page(10), "text_too_small"),
    ],
)
def test_clearly_bad_photos_are_flagged(name: str, image: Image.Image, problem: str) -> None:
    assert measure(image).problem() == problem, (name, measure(image))


def test_the_text_size_is_judged_at_the_budget_the_engine_uses() -> None:
    """14 px text on a 2048-pixel photo is 6 px at 280 soft tokens, 12 px at 1120."""
    jpeg = png_bytes(page(14), "JPEG")
    assert check_photo(jpeg, 280) == "text_too_small"
    assert check_photo(jpeg, 1120) is None
