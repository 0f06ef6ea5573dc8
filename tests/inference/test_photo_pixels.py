"""The model sees a photo's pixels as it did before preparation was made cheaper.

Before: normalize_image decoded a JPEG whole, rotated it, shrank it to 2,048 px with
LANCZOS and re-encoded it; the engine decoded that and the image processor resized it.
Now a large JPEG is decoded at a reduced DCT scale, and the engine resizes before the
processor. The processor's pixel values are compared: equal where nothing was reduced,
within a stated tolerance where it was.
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageOps
from transformers import Gemma4ImageProcessorPil

from inference import GemmaEngine, Request
from inference.images import decode_image, normalize_image, photo_key
from inference.types import ImageRejected
from tests.conftest import png_bytes, small_photo
from tools.bench_prep import photo_jpeg
from tools.samples import draw_menu

# Of the processor's values (0..1): mean and 99th percentile of |new - before|. A large
# JPEG measured 0.03-0.40 / 255 mean, 1-3 / 255 at the 99th percentile (tools.bench_prep's
# phone photo, a 3000x4000 menu, a 4000x3000 scene; docs/performance.md).
MEAN_TOLERANCE = 1 / 255
P99_TOLERANCE = 4 / 255


def normalized_before(data: bytes) -> bytes:
    """normalize_image as it was: decoded whole, rotated, LANCZOS to 2,048 px, q92."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image.thumbnail((2048, 2048), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def processed_before(processor, photos: list[bytes], soft_tokens: int) -> dict:
    """The engine's photo features as they were: the processor over the decoded photos."""
    images = [decode_image(photo) for photo in photos]
    return processor(images=images, max_soft_tokens=soft_tokens, return_tensors="pt")


def test_a_large_jpeg_reaches_the_processor_within_tolerance() -> None:
    processor = Gemma4ImageProcessorPil(max_soft_tokens=280)
    for sent in (photo_jpeg(4032, 3024, 6), png_bytes(draw_menu(3000, 4000), "JPEG")):
        now = normalize_image(sent)
        with Image.open(io.BytesIO(now)) as image, Image.open(io.BytesIO(sent)) as original:
            # decoded at half scale (3 MP, above the 1,120-token budget's 2.58 MP), upright
            upright = ImageOps.exif_transpose(original).size
            assert image.size == (upright[0] // 2, upright[1] // 2)
        before = processed_before(processor, [normalized_before(sent)], 280)
        after = processed_before(processor, [now], 280)
        assert torch.equal(after["image_position_ids"], before["image_position_ids"])
        difference = (after["pixel_values"] - before["pixel_values"]).abs().flatten()
        assert difference.mean() <= MEAN_TOLERANCE
        assert difference.quantile(0.99) <= P99_TOLERANCE
        assert photo_key(now, 280) == photo_key(normalize_image(sent), 280)  # stable


def test_a_photo_too_small_to_reduce_is_normalized_as_before() -> None:
    telegram = photo_jpeg(1280, 960, None)
    assert normalize_image(telegram) == normalized_before(telegram)


def test_the_engines_photo_features_are_the_processors(tiny_engine: GemmaEngine) -> None:
    """Resized before the processor, with its size and filter: the same values, for one
    photo at the full budget and for an album's photos at a shared, smaller one."""
    photos = [
        normalize_image(photo_jpeg(1280, 960, None)),
        normalize_image(png_bytes(draw_menu(480, 640), "JPEG")),
        normalize_image(small_photo("EXIT")),  # 320x240: enlarged
        normalize_image(png_bytes(Image.new("RGB", (1600, 40), "white"), "JPEG")),
    ]
    soft_tokens = tiny_engine.image_soft_tokens
    for prompt_photos in ([photos[0]], photos, photos * 2):
        budget = tiny_engine.soft_tokens_per_photo(len(prompt_photos))
        assert budget <= soft_tokens
        before = processed_before(tiny_engine.image_processor, prompt_photos, budget)
        after = tiny_engine.photo_features(tuple(prompt_photos))
        assert after.keys() == before.keys()
        for name in before:
            assert torch.equal(torch.as_tensor(after[name]), torch.as_tensor(before[name]))
        request = Request(language="de", images=tuple(prompt_photos))
        inputs = tiny_engine.prepare_inputs(request, on_device=False)
        assert torch.equal(
            inputs["pixel_values"], before["pixel_values"].to(inputs["pixel_values"].dtype)
        )


def test_odd_large_jpegs_are_reduced_and_broken_ones_refused() -> None:
    """Progressive, CMYK and multi-picture (MPO) JPEGs take the reduced decode too; a
    truncated one is still refused as corrupt."""
    photos = {
        "progressive": (Image.new("RGB", (4032, 3024), "blue"), {"progressive": True}),
        "CMYK": (Image.new("CMYK", (4032, 3024), (0, 0, 0, 0)), {}),
        "MPO": (Image.new("RGB", (4032, 3024), "red"), {"format": "MPO", "save_all": True,
                "append_images": [Image.new("RGB", (4032, 3024), "green")]}),
    }  # fmt: skip
    for name, (image, options) in photos.items():
        buffer = io.BytesIO()
        image.save(buffer, **{"format": "JPEG", **options})
        data = buffer.getvalue()
        normalized = decode_image(normalize_image(data))
        assert normalized.size == (2016, 1512), name
        assert normalized.getpixel((5, 5)) == decode_image(normalized_before(data)).getpixel((5, 5))
        with pytest.raises(ImageRejected) as rejected:
            normalize_image(data[: len(data) // 2])
        assert rejected.value.reason == "corrupt", name
