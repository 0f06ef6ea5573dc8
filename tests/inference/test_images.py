import io

import pytest
from PIL import Image

from inference.images import ImageLimits, decode_image, normalize_image
from inference.types import ImageRejected
from tests.conftest import png_bytes


def test_normalizes_to_upright_rgb_jpeg_within_max_side() -> None:
    rgba = Image.new("RGBA", (3000, 1500), (255, 0, 0, 0))
    out = decode_image(normalize_image(png_bytes(rgba), ImageLimits(max_side=1024)))
    assert out.mode == "RGB" and out.size == (1024, 512)
    assert out.getpixel((10, 10)) == (255, 255, 255)  # transparent became white


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (400, 200), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(normalize_image(buffer.getvalue())).size == (200, 400)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (64, 64), color) for color in ("red", "green")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    r, g, _b = decode_image(normalize_image(buffer.getvalue())).getpixel((32, 32))
    assert r > 200 and g < 60


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello", "not_an_image"),
        (b"x" * 2_000_000, "too_large"),
        (png_bytes(Image.new("RGB", (8, 300))), "too_small"),
        (png_bytes(Image.new("RGB", (3000, 3000))), "too_many_pixels"),
        (png_bytes(Image.new("RGB", (100, 100)), "ICO"), "unsupported_format"),
        (png_bytes(Image.new("RGB", (400, 400), "red"))[:200], "corrupt"),
    ],
)
def test_rejections(data: bytes, reason: str) -> None:
    limits = ImageLimits(max_bytes=1_000_000, max_pixels=5_000_000)
    with pytest.raises(ImageRejected) as info:
        normalize_image(data, limits)
    assert info.value.reason == reason


def encoded(image: Image.Image, fmt: str) -> bytes:
    """`image` written by the encoder registered for `fmt` (HEIF: pillow-heif's x265; AVIF:
    Pillow's own), as a phone would send it."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_are_read(fmt: str) -> None:
    photo = Image.new("RGB", (640, 480), (200, 30, 30))
    out = decode_image(normalize_image(encoded(photo, fmt)))
    r, g, b = out.getpixel((320, 240))
    assert out.size == (640, 480) and r > 150 and g < 80 and b < 80


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_keep_the_limits(fmt: str) -> None:
    data = encoded(Image.new("RGB", (1200, 1000)), fmt)
    for limits, reason in [
        (ImageLimits(max_pixels=1_000_000), "too_many_pixels"),  # told by the header
        (ImageLimits(max_bytes=len(data) - 1), "too_large"),
        (ImageLimits(min_side=1001), "too_small"),
    ]:
        with pytest.raises(ImageRejected) as info:
            normalize_image(data, limits)
        assert info.value.reason == reason
    with pytest.raises(ImageRejected) as info:
        normalize_image(data[: len(data) // 2])
    assert info.value.reason in ("not_an_image", "corrupt")


def test_heic_decompression_bomb_is_refused_unread(monkeypatch) -> None:
    """Pillow's own bomb guard (twice MAX_IMAGE_PIXELS) holds for pillow-heif's opener."""
    data = encoded(Image.new("RGB", (1200, 1000)), "HEIF")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500_000)
    with pytest.raises(ImageRejected) as info:
        normalize_image(data, ImageLimits(max_pixels=10**9))
    assert info.value.reason == "too_many_pixels"
