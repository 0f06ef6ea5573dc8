"""Check and normalise user photos before they reach the model (Pillow only)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from inference.types import ImageRejected

# HEIC (an iPhone's photo sent as a file) through pillow-heif's opener; AVIF Pillow reads
# itself. Both go through Image.open, so its decompression-bomb check and the pixel and
# byte limits below hold for them as for any format.
pillow_heif.register_heif_opener()
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF"})
REJECT_REASONS = (
    "too_large",  # more bytes than allowed
    "not_an_image",  # Pillow cannot identify it
    "unsupported_format",  # an image, but not one we accept (e.g. PDF, ICO, EPS)
    "too_many_pixels",  # decompression-bomb guard
    "too_small",  # nothing legible fits in it
    "corrupt",  # header fine, pixel data broken or truncated
)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    max_side: int = 2048  # larger photos are downscaled; the model sees at most ~1.9k px a side


# The most pixels Gemma 4's image processor takes of a photo: 1,120 soft tokens (its largest
# budget) of 3 x 3 patches of 16 x 16 px. A JPEG is decoded at a reduced scale (its DCT's,
# far cheaper than decoding it whole and shrinking it) only while it keeps at least these.
MODEL_MAX_PIXELS = 1120 * 9 * 16 * 16


def normalize_image(data: bytes, limits: ImageLimits = ImageLimits()) -> bytes:
    """Validate `data` and return it as an upright RGB JPEG no larger than `max_side`.

    Raises ImageRejected with one of REJECT_REASONS.
    """
    if len(data) > limits.max_bytes:
        raise ImageRejected("too_large", f"{len(data)} bytes")
    image = _open(data, limits)
    try:
        image.seek(0)  # first frame of an animation
        _draft_pixels(image, MODEL_MAX_PIXELS)  # before rotating: that decodes it
        image = ImageOps.exif_transpose(image)
        image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
        rgb = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageRejected("corrupt", type(exc).__name__) from exc
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=92)
    return out.getvalue()


def photo_key(data: bytes, soft_tokens: int) -> bytes:
    """A photo's identity for caches of work done on it at a soft-token budget (normalized
    bytes: one photo, one key a budget); a digest, so the photo itself is not kept."""
    digest = hashlib.blake2b(data, digest_size=16, person=b"soft%d" % soft_tokens)
    return digest.digest()


def decode_image(data: bytes) -> Image.Image:
    """Decode bytes produced by normalize_image (trusted) into an RGB image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _draft_pixels(image: Image.Image, min_pixels: int) -> None:
    """Let a JPEG decode at the smallest scale that keeps at least `min_pixels`."""
    width, height = image.size
    for scale in (8, 4, 2):
        if (width // scale) * (height // scale) >= min_pixels:
            image.draft(None, (width // scale, height // scale))
            return


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", str(exc)) from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected("not_an_image") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageRejected("corrupt", type(exc).__name__) from exc
    if image.format not in ACCEPTED_FORMATS:
        raise ImageRejected("unsupported_format", str(image.format))
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageRejected("too_many_pixels", f"{width}x{height}")
    if min(width, height) < limits.min_side:
        raise ImageRejected("too_small", f"{width}x{height}")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Load pixels and flatten transparency onto white (signs photographed as PNG stickers)."""
    image.load()
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
