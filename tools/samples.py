"""Draw test photos of signs and menus (Pillow only): for the demo, tests and benchmarks."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIGN_LINES = [("Ausgang", "Exit"), ("Gleis 3", "Platform 3"), ("Nicht rauchen", "No smoking")]
MENU = [
    ("Speisekarte", None),
    ("Wiener Schnitzel mit Kartoffelsalat", "18,50 €"),
    ("Schweinebraten mit Knödel", "16,90 €"),
    ("Käsespätzle", "13,40 €"),
    ("Forelle Müllerin", "21,00 €"),
    ("Apfelstrudel mit Vanilleeis", "7,50 €"),
    ("Weißbier 0,5 l", "4,80 €"),
]


_FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu when the system has it (umlauts, €), else Pillow's built-in font."""
    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def draw_sign(width: int = 1024, height: int = 768, *, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (rng.randint(90, 140), 130, 170))
    draw = ImageDraw.Draw(image)
    board = (width // 10, height // 5, width * 9 // 10, height * 4 // 5)
    draw.rounded_rectangle(board, radius=24, fill=(18, 92, 56), outline="white", width=8)
    german, english = SIGN_LINES[seed % len(SIGN_LINES)]
    draw.text((board[0] + 60, board[1] + 60), german, font=_font(height // 7), fill="white")
    draw.text((board[0] + 60, board[1] + 60 + height // 5), english, font=_font(height // 12),
              fill=(220, 230, 220))  # fmt: skip
    draw.polygon([(board[2] - 200, board[3] - 150), (board[2] - 80, board[3] - 100),
                  (board[2] - 200, board[3] - 50)], fill="white")  # fmt: skip
    return image.filter(ImageFilter.GaussianBlur(0.6))


def draw_menu(width: int = 768, height: int = 1024, *, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (246, 240, 226))
    draw = ImageDraw.Draw(image)
    y = 50
    for dish, price in MENU:
        size = 48 if price is None else 28
        draw.text((50, y), dish, font=_font(size), fill=(40, 30, 20))
        if price:
            draw.text((width - 170, y), price, font=_font(size), fill=(40, 30, 20))
        y += size + rng.randint(40, 70)
    return image.rotate(rng.uniform(-3, 3), fillcolor=(120, 110, 100), expand=False)


PAGE_TEXT = ("Grilled trout with almonds 21,00", "Pork roast, dumplings 16,90",
             "Cheese noodles 13,40", "Apple strudel, vanilla ice cream 7,50")  # fmt: skip


def draw_text_page(width: int, height: int, *, font_px: int, seed: int = 0) -> Image.Image:
    """A page of dark text lines `font_px` high on paper, like a menu photographed square
    on: for the photo check's calibration."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (238, 232, 218))
    draw = ImageDraw.Draw(image)
    font = _font(font_px)
    y = font_px
    while y < height - 2 * font_px:
        line = PAGE_TEXT[rng.randrange(len(PAGE_TEXT))]
        draw.text((font_px, y), line, font=font, fill=(35, 30, 25))
        y += int(font_px * 1.8)
    return image


def draw_scene(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """A sharp photo without text: sky, hills, houses, a tree, and sensor noise."""
    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    image = Image.blend(Image.new("RGB", (width, height), (70, 130, 200)), sky, 0.3)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.7, height * 0.1, width * 0.8, height * 0.1 + width * 0.1),
                 fill=(250, 230, 150))  # fmt: skip
    draw.polygon([(0, height * 0.6), (width * 0.4, height * 0.45), (width, height * 0.65),
                  (width, height), (0, height)], fill=(60, 120, 60))  # fmt: skip
    for _ in range(6):
        x, w = rng.uniform(0, width * 0.9), rng.uniform(width * 0.05, width * 0.12)
        top = rng.uniform(height * 0.5, height * 0.7)
        draw.rectangle((x, top, x + w, height * 0.85), fill=(rng.randint(150, 230), 120, 90))
        draw.polygon([(x, top), (x + w / 2, top - w / 2), (x + w, top)], fill=(140, 50, 40))
    noise = Image.effect_noise((width, height), 12).convert("RGB")
    return Image.blend(image, noise, 0.06)


def write_sample(path: str | Path, *, kind: str = "sign", seed: int = 0) -> Path:
    path = Path(path)
    image = draw_sign(seed=seed) if kind == "sign" else draw_menu(seed=seed)
    image.save(path)
    return path
