"""A cheap look at a photo before the model runs: too dark, washed out, blurred, or its text
far too small for the model to read. Pillow only, at the resolution the model will see.

The model sees each photo resized, aspect kept, to about `soft_tokens` × 48 × 48 pixels
(Gemma 4: 16-pixel patches pooled 3 × 3 into one soft token; 280 tokens ≈ 800 × 800), so
that is where blur and light are judged: blur by the strongest steps between neighbouring
pixels (a cousin of the variance of the Laplacian that does not punish photos with few
edges), and text is too small when its strokes are sharp at twice that resolution and
lose their contrast at it. Thresholds: docs/photo_check.md, measured by
scripts/calibrate_photo_check.py.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageChops

PATCH_SIZE = 16
POOLING = 3
DEFAULT_SOFT_TOKENS = 280  # Gemma 4's image processor default

PROBLEMS = ("too_dark", "overexposed", "blurry", "text_too_small")

# measured by scripts/calibrate_photo_check.py (docs/photo_check.md); luminance levels 0..255
DARK_BRIGHTEST = 60  # the brightest 1 % of the photo darker than this: too dark
WASHED_OUT_SHARE = 0.5  # more than this share at 245 or above ...
WASHED_OUT_EDGE = 64  # ... and no 3 × 3 step this strong: overexposed
MIN_CONTRAST = 24  # a photo whose 1st and 99th percentiles are closer is plain: not blurry
MIN_WASHED_OUT_CONTRAST = 6  # ... and with less than this, blank: nothing to retake
BLURRY_EDGE = 40  # its strongest 3 × 3 steps (the top 0.1 %) below this: blurry
SMALL_TEXT_FINE_EDGE = 150  # sharp strokes at twice the model's resolution (top 1 %) ...
SMALL_TEXT_KEPT = 0.72  # ... that keep less than this share of their step at the model's


@dataclass(frozen=True)
class Measures:
    """At the model's resolution unless named `fine_`: twice it, or the photo's own."""

    brightest: float  # 99th percentile of luminance
    contrast: float  # 99th minus 1st percentile
    clipped: float  # share of pixels at 245 or above
    edge: float  # 99.9th percentile of the 3 × 3 max − min: the strongest steps
    stroke: float  # 99th percentile of the same: text strokes where there is text
    fine_stroke: float

    def problem(self) -> str | None:
        """The first of PROBLEMS this photo has, or None."""
        if self.brightest < DARK_BRIGHTEST:
            return "too_dark"
        if (
            self.clipped > WASHED_OUT_SHARE
            and self.edge < WASHED_OUT_EDGE
            and self.contrast >= MIN_WASHED_OUT_CONTRAST
        ):
            return "overexposed"
        if self.contrast >= MIN_CONTRAST and self.edge < BLURRY_EDGE:
            return "blurry"
        if self.fine_stroke >= SMALL_TEXT_FINE_EDGE and self.stroke < (
            SMALL_TEXT_KEPT * self.fine_stroke
        ):
            return "text_too_small"
        return None


def model_size(width: int, height: int, soft_tokens: int) -> tuple[int, int]:
    """The size the model's image processor resizes a photo to (transformers'
    gemma4 get_aspect_ratio_preserving_size, whose edge cases the bot's photos, at least
    16 pixels a side, do not reach)."""
    side = PATCH_SIZE * POOLING
    factor = math.sqrt(soft_tokens * POOLING**2 * PATCH_SIZE**2 / (width * height))
    return (
        max(side, math.floor(width * factor / side) * side),
        max(side, math.floor(height * factor / side) * side),
    )


def measure(image: Image.Image, soft_tokens: int = DEFAULT_SOFT_TOKENS) -> Measures:
    gray = image.convert("L")
    size = model_size(*gray.size, soft_tokens)
    seen = gray.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    fine_size = (min(gray.width, 2 * size[0]), min(gray.height, 2 * size[1]))
    fine = seen if fine_size[0] <= size[0] else gray.resize(fine_size, Image.Resampling.BOX)
    histogram = seen.histogram()
    steps = _steps(seen)
    return Measures(
        brightest=_percentile(histogram, 0.99),
        contrast=_percentile(histogram, 0.99) - _percentile(histogram, 0.01),
        clipped=sum(histogram[245:]) / (seen.width * seen.height),
        edge=_percentile(steps, 0.999),
        stroke=_percentile(steps, 0.99),
        fine_stroke=_percentile(_steps(fine), 0.99),
    )


def check_photo(jpeg: bytes, soft_tokens: int = DEFAULT_SOFT_TOKENS) -> str | None:
    """The problem of a normalized photo (inference.normalize_image's JPEG), or None."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return measure(image, soft_tokens).problem()


def _steps(gray: Image.Image) -> list[int]:
    """Histogram of each pixel's 3 × 3 neighbourhood's max − min (the border pixels, which
    the shifted copies wrap around, left out). Shifted copies: ImageFilter's rank filters
    take ten times as long."""
    spread = ImageChops.subtract(_neighbourhood(gray, ImageChops.lighter),
                                 _neighbourhood(gray, ImageChops.darker))  # fmt: skip
    return spread.crop((1, 1, gray.width - 1, gray.height - 1)).histogram()


def _neighbourhood(gray: Image.Image, pick) -> Image.Image:
    """The 3 × 3 max (pick=lighter) or min (darker) of each pixel, row then column."""
    rows = pick(pick(gray, ImageChops.offset(gray, 1, 0)), ImageChops.offset(gray, -1, 0))
    return pick(pick(rows, ImageChops.offset(rows, 0, 1)), ImageChops.offset(rows, 0, -1))


def _percentile(histogram: list[int], q: float) -> float:
    total, wanted, seen = sum(histogram), sum(histogram) * q, 0
    for value, count in enumerate(histogram):
        seen += count
        if seen >= wanted and count:
            return float(value)
    return 255.0 if total else 0.0
