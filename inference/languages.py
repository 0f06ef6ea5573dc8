"""The languages a traveller can ask answers in: a code, the English name the model is told,
the native name users see, and other names and codes users type for it.

Codes are BCP-47 style ("nl", "zh-Hant", "pt-PT"): a plain code is the language with no
variant named, so stored settings from before variants existed ("de", "zh", "pt") keep
their meaning. Nothing here depends on telegram or torch: the bot and the prompt builder
both read it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str
    name: str  # in English, as the model prompt names it
    native: str  # as its speakers write it, shown to users
    aliases: tuple[str, ...] = ()  # other names and codes that mean it


_LANGUAGES = (
    Language("af", "Afrikaans", "Afrikaans"),
    Language("am", "Amharic", "አማርኛ"),
    Language("ar", "Arabic", "العربية", ("عربي",)),
    Language("az", "Azerbaijani", "Azərbaycanca", ("azeri",)),
    Language("be", "Belarusian", "Беларуская"),
    Language("bg", "Bulgarian", "Български"),
    Language("bn", "Bengali", "বাংলা", ("bangla",)),
    Language("bs", "Bosnian", "Bosanski"),
    Language("ca", "Catalan", "Català", ("valencian", "valencià")),
    Language("cs", "Czech", "Čeština", ("česky",)),
    Language("cy", "Welsh", "Cymraeg"),
    Language("da", "Danish", "Dansk"),
    Language("de", "German", "Deutsch"),
    Language("el", "Greek", "Ελληνικά"),
    Language("en", "English", "English"),
    Language("es", "Spanish", "Español", ("castellano", "castilian")),
    Language("et", "Estonian", "Eesti", ("eesti keel",)),
    Language("eu", "Basque", "Euskara"),
    Language("fa", "Persian", "فارسی", ("farsi",)),
    Language("fi", "Finnish", "Suomi"),
    Language("fil", "Filipino", "Filipino", ("tl", "tagalog")),
    Language("fr", "French", "Français"),
    Language("ga", "Irish", "Gaeilge", ("irish gaelic",)),
    Language("gl", "Galician", "Galego"),
    Language("gu", "Gujarati", "ગુજરાતી"),
    Language("he", "Hebrew", "עברית", ("iw",)),  # iw: the code before 1989, still sent
    Language("hi", "Hindi", "हिन्दी", ("हिंदी",)),
    Language("hr", "Croatian", "Hrvatski"),
    Language("hu", "Hungarian", "Magyar"),
    Language("hy", "Armenian", "Հայերեն"),
    Language("id", "Indonesian", "Bahasa Indonesia", ("in", "indonesia")),
    Language("is", "Icelandic", "Íslenska"),
    Language("it", "Italian", "Italiano"),
    Language("ja", "Japanese", "日本語", ("nihongo",)),
    Language("ka", "Georgian", "ქართული"),
    Language("kk", "Kazakh", "Қазақ тілі", ("қазақша",)),
    Language("km", "Khmer", "ខ្មែរ", ("cambodian",)),
    Language("kn", "Kannada", "ಕನ್ನಡ"),
    Language("ko", "Korean", "한국어", ("조선말",)),
    Language("ky", "Kyrgyz", "Кыргызча"),
    Language("lb", "Luxembourgish", "Lëtzebuergesch"),
    Language("lo", "Lao", "ລາວ"),
    Language("lt", "Lithuanian", "Lietuvių"),
    Language("lv", "Latvian", "Latviešu"),
    Language("mk", "Macedonian", "Македонски"),
    Language("ml", "Malayalam", "മലയാളം"),
    Language("mn", "Mongolian", "Монгол"),
    Language("mr", "Marathi", "मराठी"),
    Language("ms", "Malay", "Bahasa Melayu", ("melayu",)),
    Language("mt", "Maltese", "Malti"),
    Language("my", "Burmese", "မြန်မာ", ("myanmar",)),
    Language("ne", "Nepali", "नेपाली"),
    Language("nl", "Dutch", "Nederlands", ("flemish", "vlaams")),
    Language("no", "Norwegian", "Norsk", ("nb", "nn", "bokmål", "nynorsk", "norsk bokmål")),
    Language("pa", "Punjabi", "ਪੰਜਾਬੀ"),
    Language("pl", "Polish", "Polski"),
    Language("ps", "Pashto", "پښتو"),
    Language("pt", "Portuguese", "Português"),
    Language(
        "pt-BR",
        "Brazilian Portuguese",
        "Português (Brasil)",
        ("português do brasil", "português brasileiro", "brasileiro", "portuguese (brazil)"),
    ),
    Language(
        "pt-PT",
        "European Portuguese",
        "Português (Portugal)",
        ("português europeu", "português de portugal", "portuguese (portugal)"),
    ),
    Language("ro", "Romanian", "Română", ("moldovan",)),
    Language("ru", "Russian", "Русский"),
    Language("si", "Sinhala", "සිංහල", ("sinhalese",)),
    Language("sk", "Slovak", "Slovenčina"),
    Language("sl", "Slovenian", "Slovenščina", ("slovene",)),
    Language("so", "Somali", "Soomaali"),
    Language("sq", "Albanian", "Shqip"),
    Language("sr", "Serbian", "Српски", ("srpski",)),
    Language("sv", "Swedish", "Svenska"),
    Language("sw", "Swahili", "Kiswahili"),
    Language("ta", "Tamil", "தமிழ்"),
    Language("te", "Telugu", "తెలుగు"),
    Language("th", "Thai", "ไทย", ("ภาษาไทย",)),
    Language("tr", "Turkish", "Türkçe"),
    Language("uk", "Ukrainian", "Українська"),
    Language("ur", "Urdu", "اردو"),
    Language("uz", "Uzbek", "Oʻzbekcha", ("o'zbek",)),
    Language("vi", "Vietnamese", "Tiếng Việt"),
    Language("yo", "Yoruba", "Yorùbá"),
    Language("yue", "Cantonese", "粵語", ("廣東話", "广东话")),
    # Plain "zh" is Simplified, as it was before variants: mainland China and Singapore.
    Language(
        "zh",
        "Simplified Chinese",
        "简体中文",
        (
            "zh-Hans",
            "zh-CN",
            "zh-SG",
            "chinese",
            "chinese (simplified)",
            "中文",
            "汉语",
            "普通话",
            "mandarin",
            "中文（简体）",
        ),
    ),
    # Taiwan, Hong Kong and Macau write Traditional characters.
    Language(
        "zh-Hant",
        "Traditional Chinese",
        "繁體中文",
        (
            "zh-TW",
            "zh-HK",
            "zh-MO",
            "繁体中文",
            "正體中文",
            "chinese (traditional)",
            "中文（繁體）",
        ),
    ),
    Language("zu", "Zulu", "isiZulu"),
)

LANGUAGES: dict[str, Language] = {language.code: language for language in _LANGUAGES}

# a language tag: "pt", "pt-BR", "zh_Hant_TW", "es-419" (a query with spaces is a name)
_TAG = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{2,8})*")


def _key(text: str) -> str:
    """Case, accents and separators made irrelevant: "Português  Europeu" and
    "portugues-europeu" → "portugues-europeu", "zh_Hant" → "zh-hant"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Mn: the accents NFKD split off; P, Z, S: punctuation, spaces, symbols ("(", "_", "-")
    kept = "".join(
        " " if unicodedata.category(char)[0] in "PZS" else char
        for char in decomposed
        if unicodedata.category(char) != "Mn"
    )
    return "-".join(kept.split())


def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for language in _LANGUAGES:
        for text in (language.code, language.name, language.native, *language.aliases):
            key = _key(text)
            if index.setdefault(key, language.code) != language.code:
                raise ValueError(f"{text!r} names both {index[key]} and {language.code}")
    return index


_INDEX = _index()


def match_language(query: str) -> str | None:
    """The code of the language `query` names: a code or tag ("nl", "pt_BR", "zh-Hant-TW",
    "es-MX": a region without a variant of its own is the plain language), or a name in
    English or in the language itself ("Dutch", "Nederlands", "繁體中文"). None if unknown."""
    key = _key(query)
    if key in _INDEX:
        return _INDEX[key]
    if _TAG.fullmatch(query.strip().casefold()):
        subtags = key.split("-")
        for end in range(len(subtags) - 1, 0, -1):  # zh-hant-tw → zh-hant → zh
            if (code := _INDEX.get("-".join(subtags[:end]))) is not None:
                return code
    return None


def _language(code: str) -> Language | None:
    """`code`'s entry, also for a code written otherwise ("pt_br", "zh-TW")."""
    return LANGUAGES.get(code) or LANGUAGES.get(match_language(code) or "")


def language_name(code: str) -> str:
    """The English name for the model prompt ("Traditional Chinese"); the code itself for a
    language not in the table."""
    language = _language(code)
    return language.name if language else code


def native_name(code: str) -> str:
    """The name its speakers use ("繁體中文"), for users; the code itself if unknown."""
    language = _language(code)
    return language.native if language else code
