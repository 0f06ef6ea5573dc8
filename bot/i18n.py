"""UI strings from locales/<code>.json, one file per language, English as the fallback.

Users may choose any answer language (inference.languages); the bot speaks to them in the
nearest UI locale there is."""

from __future__ import annotations

import json
import string
from pathlib import Path

FALLBACK = "en"


class Texts:
    def __init__(self, catalogs: dict[str, dict[str, str]]) -> None:
        if FALLBACK not in catalogs:
            raise ValueError(f"the {FALLBACK} locale is required")
        self._catalogs = catalogs

    @classmethod
    def load(cls, directory: Path) -> Texts:
        catalogs = {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(directory.glob("*.json"))
        }
        return cls(catalogs)

    @property
    def languages(self) -> list[str]:
        """The UI locales' codes: also the common answer languages /lang offers."""
        return sorted(self._catalogs)

    def get(self, language: str, key: str, /, **values: object) -> str:
        """The string in `language`'s UI locale (`ui_language`), English where it lacks one."""
        catalog = self._catalogs[self.ui_language(language)]
        template = catalog.get(key) or self._catalogs[FALLBACK][key]
        return template.format(**values)

    def ui_language(self, language: str) -> str:
        """The UI locale for an answer language: its own, else its base language's
        (pt-PT → pt, zh-Hant → zh, es-MX → es), else English (nl → en)."""
        if language in self._catalogs:
            return language
        base = language.partition("-")[0]
        return base if base in self._catalogs else FALLBACK

    def keys(self, language: str) -> set[str]:
        return set(self._catalogs[language])

    def placeholders(self, language: str, key: str) -> set[str]:
        template = self._catalogs[language][key]
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
