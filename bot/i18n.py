"""UI strings from locales/<code>.json, one file per language, English as the fallback.

Users may choose any answer language (inference.languages); the bot speaks to them in the
nearest UI locale there is.

A string with a count names the placeholder that counts and gives one template for each
CLDR plural category its language has (Babel's rules: English one/other, Russian
one/few/many/other, Arabic zero/one/two/few/many/other, Japanese only other):

    "forget_done": {"count": {"one": "… {count} record …", "other": "… {count} records …"}}
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from babel import Locale

FALLBACK = "en"

Plural = dict[str, dict[str, str]]  # {count placeholder: {CLDR category: template}}
Catalog = dict[str, str | Plural]


class Texts:
    def __init__(self, catalogs: dict[str, Catalog]) -> None:
        if FALLBACK not in catalogs:
            raise ValueError(f"the {FALLBACK} locale is required")
        self._catalogs = catalogs
        self._plural_forms = {code: Locale.parse(code).plural_form for code in catalogs}

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
        """The string in `language`'s UI locale (`ui_language`), English where it lacks one;
        for a string with a count, the form the count takes in that locale."""
        locale = self.ui_language(language)
        if not self._catalogs[locale].get(key):
            locale = FALLBACK
        message = self._catalogs[locale][key]
        if isinstance(message, dict):
            [(count_name, forms)] = message.items()
            message = forms[self._plural_forms[locale](values[count_name])]
        return message.format(**values)

    def ui_language(self, language: str) -> str:
        """The UI locale for an answer language: its own, else its base language's
        (pt-PT → pt, zh-Hant → zh, es-MX → es), else English (nl → en)."""
        if language in self._catalogs:
            return language
        base = language.partition("-")[0]
        return base if base in self._catalogs else FALLBACK

    def keys(self, language: str) -> set[str]:
        return set(self._catalogs[language])

    def templates(self, language: str, key: str) -> list[str]:
        """Every template of a key: one, or one per plural category."""
        message = self._catalogs[language][key]
        if isinstance(message, str):
            return [message]
        [forms] = message.values()
        return list(forms.values())

    def placeholders(self, language: str, key: str) -> set[str]:
        """The placeholders of a key's templates together (a plural form may spell its count
        out, as Arabic does for one and two)."""
        parse = string.Formatter().parse
        return {name for t in self.templates(language, key) for _, name, _, _ in parse(t) if name}
