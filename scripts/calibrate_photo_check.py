"""The quick photo check (bot/photo_check.py) on generated photos: drawn text in a real font
(DejaVu Sans where installed), blurred with Pillow's GaussianBlur, darkened, washed out,
shrunk, and a sharp photo without text; each photo's measures and verdict at the model's
resolution, and the check's CPU time per photo at a 12 MP phone photo and at the pixel
limit. docs/photo_check.md reads the thresholds from this output.

    python scripts/calibrate_photo_check.py [--out docs/photo_check.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import statistics
import time
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter

from bot.photo_check import DEFAULT_SOFT_TOKENS, check_photo, measure
from bot.settings import Settings
from inference import ImageLimits, normalize_image
from tools.samples import draw_scene, draw_text_page

SIZE = (2048, 1536)  # about what normalize_image makes of a 4:3 phone photo (2016x1512)
REPEATS = 5


def photos() -> dict[str, dict[str, Image.Image]]:
    page = draw_text_page(*SIZE, font_px=40)
    scene = draw_scene(*SIZE)
    white = Image.new("RGB", SIZE, "white")
    return {
        "text height (px on a 2048-pixel photo)": {
            f"{px} px": draw_text_page(*SIZE, font_px=px)
            for px in (8, 10, 12, 14, 16, 18, 20, 24, 28, 40, 64)
        },
        "blur (GaussianBlur radius, 40 px text)": {
            f"radius {r}": page.filter(ImageFilter.GaussianBlur(r)) for r in (0, 1, 2, 3, 4, 6, 8)
        },
        "blur (GaussianBlur radius, photo without text)": {
            f"radius {r}": scene.filter(ImageFilter.GaussianBlur(r)) for r in (0, 2, 4, 6, 8)
        },
        "light (Brightness factor, 40 px text)": {
            f"x {f}": ImageEnhance.Brightness(page).enhance(f) for f in (0.1, 0.2, 0.3, 0.5, 1.0)
        },
        "washed out (blend toward white, 40 px text)": {
            f"{a:.0%} white": Image.blend(page, white, a) for a in (0.5, 0.6, 0.7, 0.8, 0.9)
        },
    }


def cpu_ms(width: int, height: int, soft_tokens: int, limits: ImageLimits) -> dict:
    """Median milliseconds of normalize_image (decode, rotate, shrink to 2048) and of the
    check on its output, for a JPEG photo of text `width` x `height`."""
    buffer = io.BytesIO()
    draw_text_page(width, height, font_px=height // 40).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    normalize, check = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        jpeg = normalize_image(data, limits)
        middle = time.perf_counter()
        check_photo(jpeg, soft_tokens)
        normalize.append((middle - started) * 1000)
        check.append((time.perf_counter() - middle) * 1000)
    return {
        "photo": f"{width} x {height} ({width * height / 1e6:.1f} MP, {len(data) // 1024} KiB)",
        "normalize_ms": round(statistics.median(normalize), 1),
        "check_ms": round(statistics.median(check), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/photo_check.json"))
    args = parser.parse_args()
    results: dict = {"soft_tokens": DEFAULT_SOFT_TOKENS, "photo_size": list(SIZE), "series": {}}
    for series, images in photos().items():
        rows = {}
        for name, image in images.items():
            measures = measure(image, DEFAULT_SOFT_TOKENS)
            rows[name] = {**dataclasses.asdict(measures), "problem": measures.problem()}
            print(f"{series:48s} {name:10s} {rows[name]['problem'] or 'ok':15s}"
                  f" edge {measures.edge:5.0f} stroke {measures.stroke:5.0f}"
                  f"/{measures.fine_stroke:<5.0f} contrast {measures.contrast:5.0f}"
                  f" brightest {measures.brightest:5.0f}")  # fmt: skip
        results["series"][series] = rows
    settings = Settings(_env_file=None)
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    side = int((settings.max_image_pixels * 4 / 3) ** 0.5)
    results["cpu"] = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "per_photo": [
            cpu_ms(4032, 3024, DEFAULT_SOFT_TOKENS, limits),
            cpu_ms(side, side * 3 // 4, DEFAULT_SOFT_TOKENS, limits),
        ],
    }
    for row in results["cpu"]["per_photo"]:
        print(row)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
