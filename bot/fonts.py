"""Fonts for pictures of text in any script the bot meets: Google's Noto, as Debian and
Ubuntu package it (fonts-noto-core: Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
Thai; fonts-noto-cjk: Chinese, Japanese, Korean). scripts/install.sh and deploy/Dockerfile
install both; PyPI has no Noto CJK or Hebrew package. They are looked up by file name under
`TRAVELBOT_FONTS_DIR` (default /usr/share/fonts), once, at start: a missing one stops the
start with its name and the packages to install.

Arabic is joined and written right to left by Pillow's raqm layout (HarfBuzz and FriBiDi,
which Pillow's own wheels carry); without it the start stops too.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont, features

FONT_PACKAGES = "fonts-noto-core fonts-noto-cjk"
# script → file; "latin" also covers Cyrillic and Greek
FONT_FILES = {
    "latin": "NotoSans-Regular.ttf",
    "arabic": "NotoSansArabic-Regular.ttf",
    "hebrew": "NotoSansHebrew-Regular.ttf",
    "devanagari": "NotoSansDevanagari-Regular.ttf",
    "thai": "NotoSansThai-Regular.ttf",
    "cjk": "NotoSansCJK-Regular.ttc",
}
# faces of NotoSansCJK-Regular.ttc: JP, KR, SC, TC, HK in this order
CJK_FACES = {"ja": 0, "ko": 1, "zh": 2}

_RANGES = (  # (first, last, script), the scripts a phrase is told apart by
    (0x0590, 0x05FF, "hebrew"),
    (0xFB1D, 0xFB4F, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0x08A0, 0x08FF, "arabic"),
    (0xFB50, 0xFDFF, "arabic"),
    (0xFE70, 0xFEFF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0xA8E0, 0xA8FF, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "ko"),
    (0x3130, 0x318F, "ko"),
    (0xAC00, 0xD7AF, "ko"),
    (0x3040, 0x30FF, "ja"),
    (0x31F0, 0x31FF, "ja"),
    (0xFF66, 0xFF9F, "ja"),
    (0x3400, 0x4DBF, "zh"),
    (0x4E00, 0x9FFF, "zh"),
    (0xF900, 0xFAFF, "zh"),
    (0x20000, 0x3FFFF, "zh"),
)


class FontsMissing(Exception):
    """What is missing, and how to install it."""


@dataclass(frozen=True)
class FontSet:
    paths: dict[str, Path]  # FONT_FILES' keys

    @classmethod
    def find(cls, directory: Path) -> FontSet:
        """The fonts under `directory` (searched recursively); FontsMissing names what is not
        there, or a Pillow that cannot shape Arabic."""
        if not features.check("raqm"):
            raise FontsMissing(
                "Pillow has no raqm layout (libraqm, HarfBuzz, FriBiDi): Arabic and other "
                "joined scripts cannot be drawn; install Pillow's wheel from PyPI"
            )
        found: dict[str, Path] = {}
        wanted = {name: script for script, name in FONT_FILES.items()}
        if directory.is_dir():
            for path in sorted(directory.rglob("Noto*")):
                if path.name in wanted and path.is_file():
                    found.setdefault(wanted[path.name], path)
        missing = [FONT_FILES[s] for s in FONT_FILES if s not in found]
        if missing:
            raise FontsMissing(
                f"fonts not found under {directory}: {', '.join(missing)}; install the "
                f"packages {FONT_PACKAGES} (scripts/install.sh does) or set TRAVELBOT_FONTS_DIR"
            )
        return cls(found)

    def font(self, text: str, size: int) -> ImageFont.FreeTypeFont:
        """A font that covers `text`'s script, at `size` pixels, laid out by raqm."""
        script = script_of(text)
        if script in CJK_FACES:
            path, index = self.paths["cjk"], CJK_FACES[script]
        else:
            path, index = self.paths[script], 0
        return ImageFont.truetype(path, size, index=index, layout_engine=ImageFont.Layout.RAQM)


def script_of(text: str) -> str:
    """The script that decides the font: kana makes Han Japanese, Hangul Korean; the first
    other non-Latin script found; else "latin"."""
    found = set()
    for char in text:
        code = ord(char)
        for first, last, script in _RANGES:
            if first <= code <= last:
                found.add(script)
                break
    for script in ("ja", "ko", "zh"):
        if script in found:
            return script
    return next((s for s in ("arabic", "hebrew", "devanagari", "thai") if s in found), "latin")


def is_mark(char: str) -> bool:
    """A combining mark, which belongs to the character before it (Thai vowels, Devanagari
    signs, Arabic harakat)."""
    return unicodedata.category(char).startswith("M")
