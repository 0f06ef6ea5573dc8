"""Measure the CPU cost of the text line detector (bot/text_lines.py) per photo: a drawn
sign at 1024 px and a 12 MP phone photo (4032x3024), each detected at full size and scaled
to the bot's MAX_SIDE, with 1 and 2 onnxruntime threads. Writes JSON to stdout:

    PYTHONPATH=. .venv/bin/python scripts/measure_text_detector.py > docs/benchmarks/x.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

from PIL import Image, ImageDraw

from bot.fonts import FontSet
from bot.settings import Settings
from bot.text_lines import MAX_SIDE, TextLineDetector

REPEATS = 5
SIGN_LINES = ("Ausgang / Exit", "出口 東口 改札", "مخرج الطوارئ", "Platform 3 → 12:45", "Kasse")


def sign(size: tuple[int, int], fonts: FontSet) -> Image.Image:
    """Lines of text in several scripts over a light background, scaled to `size`."""
    image = Image.new("RGB", size, (236, 228, 205))
    draw = ImageDraw.Draw(image)
    height = size[1] // (2 * len(SIGN_LINES))
    for number, line in enumerate(SIGN_LINES):
        font = fonts.font(line, height)
        draw.text((size[0] // 10, (2 * number + 0.5) * height), line, font=font, fill="black")
    return image


def timed(detector: TextLineDetector, image: Image.Image, repeats: int) -> dict:
    detector.detect(image)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        lines = detector.detect(image)
        seconds.append(time.perf_counter() - start)
    return {
        "median_ms": round(statistics.median(seconds) * 1000),
        "min_ms": round(min(seconds) * 1000),
        "num_lines": len(lines),
    }


def main() -> None:
    fonts = FontSet.find(Path(Settings(_env_file=None).fonts_dir))
    photos = {"1024x768": sign((1024, 768), fonts), "4032x3024 (12 MP)": sign((4032, 3024), fonts)}
    runs = []
    for threads in (1, 2):
        for max_side in (MAX_SIDE, 4032):
            detector = TextLineDetector(threads=threads, max_side=max_side)
            for name, image in photos.items():
                if max_side == MAX_SIDE or max(image.size) > MAX_SIDE:
                    result = timed(detector, image, REPEATS if max_side == MAX_SIDE else 2)
                    side = min(max_side, max(image.size))
                    runs.append({"photo": name, "detected_at_max_side": side, "threads": threads,
                                 **result})  # fmt: skip
    print(json.dumps({
        "what": "PP-OCRv4 text detection (rapidocr-onnxruntime) per photo, CPU",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)",
        "repeats": f"{REPEATS} (2 for a photo detected at full size)",
        "runs": runs,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
