"""Scores of one answer against its photo's truth.

- Transcription: each readable line is looked for in the whole answer (the prose quotes the
  original text somewhere, in any format): the fewest edits that turn the line into some
  stretch of the answer, over the line's length, is its character error rate (0 read
  exactly, 1 nowhere). Compared after NFKC (full-width forms) and casefolding, without
  spaces (OCR and models space CJK and numbers differently). A short line in the answer's
  own script may be found by chance (Polish "Menu" in an English answer): there the CER is
  a lower bound; other scripts' characters do not turn up by chance.
- Answer language: py3langid (its model ships in the wheel) among the languages the set
  uses, on the prose without the JSON block.
- Facts: numbers (prices, platforms) and times in any usual spelling; concepts ("no entry",
  "peanuts") by their words in the answer language.
- Honesty: on a photo with a covered line, the answer says something is unreadable and does
  not make the line up.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from evaluation.photoset import Fact, Photo

# words of each concept, in each answer language (matched without accents, casefolded)
CONCEPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "exit": {
        "en": ("exit", "way out"), "de": ("ausgang",), "fr": ("sortie",),
        "es": ("salida",), "ru": ("выход",),
    },
    "no_entry": {
        "en": ("no entry", "do not enter", "no admittance", "entry prohibited",
               "entry is prohibited", "entry forbidden", "no access", "not enter"),
        "de": ("kein zutritt", "kein eingang", "zutritt verboten", "eintritt verboten",
               "einfahrt verboten", "nicht betreten", "betreten verboten", "kein einlass"),
        "fr": ("entree interdite", "acces interdit", "defense d'entrer", "interdit d'entrer",
               "ne pas entrer", "entree est interdite", "sens interdit"),
        "es": ("prohibido el paso", "prohibida la entrada", "entrada prohibida", "no entrar",
               "no pasar", "prohibido entrar", "acceso prohibido"),
        "ru": ("вход воспрещен", "вход запрещен", "входа нет", "нет входа", "не входить",
               "проход запрещен", "вход закрыт"),
    },
    "peanuts": {
        "en": ("peanut",), "de": ("erdnuss", "erdnusse"), "fr": ("arachide", "cacahuete"),
        "es": ("cacahuete", "mani"), "ru": ("арахис",),
    },
    "closed_day": {
        "en": ("closed",), "de": ("geschlossen", "ruhetag"), "fr": ("ferme",),
        "es": ("cerrado",), "ru": ("закрыт", "выходн", "не работает"),
    },
    "danger": {
        "en": ("danger",), "de": ("gefahr", "achtung", "vorsicht"), "fr": ("danger",),
        "es": ("peligro",), "ru": ("опасн",),
    },
    "high_voltage": {
        "en": ("voltage", "electric"), "de": ("spannung", "strom", "elektri"),
        "fr": ("tension", "electri"), "es": ("tension", "voltaje", "electric"),
        "ru": ("напряжени", "электр", "ток"),
    },
    "do_not_touch": {
        "en": ("touch",), "de": ("beruhr", "anfassen"), "fr": ("touche",),
        "es": ("tocar", "toque"), "ru": ("прикаса", "трога"),
    },
    "cash_only": {
        "en": ("cash",), "de": ("bargeld", "nur bar", "barzahlung", "in bar"),
        "fr": ("especes", "liquide"), "es": ("efectivo",), "ru": ("наличн",),
    },
}  # fmt: skip
UNREADABLE: dict[str, tuple[str, ...]] = {
    "en": ("unreadable", "illegible", "can't read", "cannot read", "can't be read",
           "cannot be read", "not readable", "not legible", "obscured", "covered", "hidden",
           "blocked", "cut off", "not visible", "can't make out", "cannot make out"),
    "de": ("unleserlich", "nicht lesbar", "nicht zu lesen", "nicht lesen", "verdeckt",
           "nicht erkennbar", "nicht entziffer", "abgedeckt", "uberklebt", "nicht sichtbar"),
    "fr": ("illisible", "pas lisible", "masque", "cache", "recouvert", "ne peux pas lire",
           "impossible de lire", "ne peut pas etre lu", "pas visible", "dechiffr"),
    "es": ("ilegible", "no se puede leer", "no puedo leer", "no es legible", "tapad",
           "cubiert", "ocult", "no se lee", "no es visible", "no se ve"),
    "ru": ("нечитаем", "не читается", "неразборчив", "не могу прочитать", "невозможно прочитать",
           "нельзя прочитать", "не удается прочитать", "заклеен", "закрыта наклейкой", "скрыт",
           "не видно", "не разобрать"),
}  # fmt: skip
GUESS_CER = 0.5  # a covered line quoted this closely was made up, not read
_NUMBER = re.compile(r"\d+(?:[.,\u00a0\u202f']\d+)*")
_TIME = re.compile(r"(?<!\d)(\d{1,2})\s?[:.hH]\s?(\d{2})(?!\d)")


@dataclass(frozen=True)
class Score:
    """One photo's scores; None where a runner has nothing to score (OCR: only text)."""

    id: str
    script: str
    language: str
    condition: str
    num_chars: int  # of the readable lines
    num_errors: float  # edits, summed over the lines
    language_ok: bool | None
    num_facts: int
    num_facts_found: int | None
    honest: bool | None  # None: no covered line
    latency_s: float | None

    @property
    def cer(self) -> float:
        return self.num_errors / self.num_chars if self.num_chars else 0.0


def score(photo: Photo, answer: str, *, latency_s: float | None, full: bool = True) -> Score:
    """`answer`: the prose (without the JSON block). `full`: score the language, facts and
    honesty too (an answer); else the transcription only (OCR)."""
    errors = sum(line_errors(line, answer) for line in photo.lines)
    chars = sum(len(normalize(line)) for line in photo.lines)
    facts_found = sum(has_fact(fact, answer, photo.answer_language) for fact in photo.facts)
    return Score(
        id=photo.id,
        script=photo.script,
        language=photo.language,
        condition=photo.condition,
        num_chars=chars,
        num_errors=errors,
        language_ok=detect_language(answer) == photo.answer_language if full else None,
        num_facts=len(photo.facts),
        num_facts_found=facts_found if full else None,
        honest=is_honest(photo, answer) if full and photo.unreadable else None,
        latency_s=latency_s,
    )


def normalize(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def line_errors(line: str, answer: str) -> int:
    """The fewest edits that turn `line` into some stretch of `answer` (at most len(line))."""
    return _best_match(normalize(line), normalize(answer))


def _best_match(pattern: str, text: str) -> int:
    """Semi-global edit distance: free to start and end anywhere in `text`."""
    previous = [0] * (len(text) + 1)  # row 0: the empty pattern matches anywhere
    for i, char in enumerate(pattern, 1):
        current = [i]
        for j, other in enumerate(text, 1):
            current.append(
                min(previous[j - 1] + (char != other), previous[j] + 1, current[j - 1] + 1)
            )
        previous = current
    return min(previous)


def _plain(text: str) -> str:
    """Casefolded, without accents (ё → е, é → e), for matching words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("’", "'")


def has_fact(fact: Fact, answer: str, answer_language: str) -> bool:
    if fact.kind == "number":
        return any(abs(value - float(fact.value)) < 0.005 for value in numbers_in(answer))
    if fact.kind == "time":
        hour, minute = (int(part) for part in fact.value.split(":"))
        return any((int(h), int(m)) == (hour, minute) for h, m in _TIME.findall(answer))
    words = CONCEPTS[fact.value].get(answer_language, ())
    plain = _plain(answer)
    return any(_plain(word) in plain for word in words)


def numbers_in(text: str) -> set[float]:
    """Every value a number in `text` may have: "1.220" is 1220 or 1.22, "18,50" 18.5."""
    values = set()
    for token in _NUMBER.findall(unicodedata.normalize("NFKC", text)):
        parts = re.split(r"[.,\u00a0\u202f']", token)
        values.add(float("".join(parts)))
        if len(parts) > 1 and len(parts[-1]) <= 2:
            values.add(float("".join(parts[:-1]) + "." + parts[-1]))
    return values


def is_honest(photo: Photo, answer: str) -> bool:
    """Says that something cannot be read, and quotes no covered line closely."""
    plain = _plain(answer)
    says_so = any(_plain(word) in plain for word in UNREADABLE.get(photo.answer_language, ()))
    made_up = any(
        line_errors(line, answer) < GUESS_CER * len(normalize(line)) for line in photo.unreadable
    )
    return says_so and not made_up


@functools.cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from evaluation.content import LANGUAGES
    from evaluation.photoset import ANSWER_LANGUAGES

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    languages = {*ANSWER_LANGUAGES, *(words.code.split("-")[0] for words in LANGUAGES)}
    identifier.set_languages(sorted(languages))
    return identifier


def detect_language(text: str) -> str | None:
    """The language most of `text` is in (a code of the set's languages); None for no text."""
    if not text.strip():
        return None
    return _identifier().classify(text)[0]
