"""The ways a traveller's photo fails, applied to a drawn card: shot at an angle or in
perspective, shaken, glare from a lamp, a dark station, text too small, a sticker over a
line. Parameters come from the caller's seeded random generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CONDITIONS = (
    "clean", "perspective", "blur", "glare", "low_light", "small_text", "angle", "covered",
)  # fmt: skip
Box = tuple[int, int, int, int]


@dataclass
class Scene:
    image: Image.Image
    boxes: list[Box]  # each line's box, in the order of the lines
    card: Box


def spoil(scene: Scene, condition: str, rng) -> set[int]:
    """Spoil `scene.image` in place as `condition` says; the indices of lines made
    unreadable (only "covered" makes any)."""
    covered: set[int] = set()
    image = scene.image
    if condition == "perspective":
        image = _perspective(image, rng, strength=0.12)
    elif condition == "blur":
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.8, 2.6)))
    elif condition == "glare":
        image = _glare(image, scene, rng)
    elif condition == "low_light":
        image = _low_light(image, rng)
    elif condition == "small_text":
        image = _far_away(image, rng)
    elif condition == "angle":
        turn = rng.choice((-1, 1)) * rng.uniform(9, 16)
        image = image.rotate(turn, expand=True,
                             fillcolor=image.getpixel((5, 5)), resample=Image.BICUBIC)  # fmt: skip
        image = _perspective(image, rng, strength=0.06)
    elif condition == "covered":
        index = rng.randrange(1, len(scene.boxes))  # never the title
        _sticker(image, scene.boxes[index], rng)
        covered.add(index)
    scene.image = image.convert("RGB")
    return covered


def _perspective(image: Image.Image, rng, *, strength: float) -> Image.Image:
    """As if shot from one side: one edge of the picture farther away than the other."""
    width, height = image.size
    dx, dy = width * strength, height * strength
    near = [(0, 0), (width, 0), (width, height), (0, height)]
    if rng.random() < 0.5:  # the right side farther away
        far = [(0, 0), (width, dy), (width, height - dy), (0, height)]
    else:
        far = [(dx, 0), (width - dx, 0), (width, height), (0, height)]
    return image.transform(
        image.size, Image.Transform.PERSPECTIVE, _coefficients(far, near),
        resample=Image.Resampling.BICUBIC, fillcolor=image.getpixel((5, 5)),
    )  # fmt: skip


def _coefficients(target, source) -> list[float]:
    """PIL's perspective coefficients mapping each `target` corner back to its `source`."""
    rows, values = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values += [u, v]
    return np.linalg.solve(np.array(rows, float), np.array(values, float)).tolist()


def _glare(image: Image.Image, scene: Scene, rng) -> Image.Image:
    """A bright blot from a lamp or the sun, over part of the card."""
    left, top, right, bottom = scene.card
    cx, cy = rng.uniform(left, right), rng.uniform(top, bottom)
    radius = (right - left) * rng.uniform(0.18, 0.28)
    yy, xx = np.mgrid[0 : image.height, 0 : image.width]
    light = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)))[..., None]
    pixels = np.asarray(image, float)
    return Image.fromarray((pixels + (255 - pixels) * 0.85 * light).astype(np.uint8))


def _low_light(image: Image.Image, rng) -> Image.Image:
    """A dark place: little light, the sensor's noise."""
    pixels = np.asarray(image, float) * rng.uniform(0.22, 0.32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _far_away(image: Image.Image, rng) -> Image.Image:
    """The card small in a large photo of the street."""
    scale = rng.uniform(0.38, 0.46)
    small = image.resize((int(image.width * scale), int(image.height * scale)), Image.LANCZOS)
    scene = Image.new("RGB", (1280, 960), (rng.randint(60, 120),) * 3)
    x = rng.randint(0, scene.width - small.width)
    y = rng.randint(0, scene.height - small.height)
    scene.paste(small, (x, y))
    return scene


def _sticker(image: Image.Image, box: Box, rng) -> None:
    """A torn sticker over most of one line: what is left cannot be read."""
    left, top, right, bottom = box
    pad = (bottom - top) // 3
    start = left - pad + int((right - left) * rng.uniform(0.0, 0.08))
    shade = rng.randint(170, 220)
    ImageDraw.Draw(image).rectangle(
        (start, top - pad, right + pad, bottom + pad), fill=(shade, shade - 10, shade - 30)
    )
