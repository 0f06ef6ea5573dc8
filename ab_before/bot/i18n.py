"""UI strings from locales/<code>.json, one file per language, English as the fallback."""

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
        return sorted(self._catalogs)

    def get(self, locale: str, key: str, /, **values: object) -> str:
        catalog = self._catalogs.get(locale, self._catalogs[FALLBACK])
        template = catalog.get(key) or self._catalogs[FALLBACK][key]
        return template.format(**values)

    def language_name(self, language: str) -> str:
        return self.get(language, "language_name")

    def match_language(self, query: str) -> str | None:
        """A supported code from a code ('de', 'pt-BR') or a language name ('Deutsch')."""
        query = query.strip().casefold()
        code = query.replace("_", "-").split("-")[0]
        if code in self._catalogs:
            return code
        for language in self._catalogs:
            names = (self.get(language, "language_name"), self.get(language, "language_name_en"))
            if query in {name.casefold() for name in names}:
                return language
        return None

    def keys(self, language: str) -> set[str]:
        return set(self._catalogs[language])

    def placeholders(self, language: str, key: str) -> set[str]:
        template = self._catalogs[language][key]
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
