""" "Say it": the phrases of an answer's block, written under the prose by the bot (so they
always look the same) with one "Show to staff" button each.

A button names the answer's history row and the phrase's place in it (`say:<row>:<n>`, far
below Telegram's 64 bytes), never the text: the phrase is read again from the stored answer
when pressed, so a button whose answer was erased (/forget, retention) finds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.fonts import is_mark
from inference import Phrase

CALLBACK_PREFIX = "say"
MAX_BUTTON_LABEL_CHARS = 24
_CALLBACK = re.compile(r"say:([0-9]{1,18}):([0-9])")
# Markdown's ASCII punctuation, escaped so that a phrase is shown as written. Not "<": the
# renderer already keeps it as text (bot/render.py), and "\<" would show its backslash.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\](){}#+\-.!|~>])")


def phrases_markdown(phrases: Sequence[Phrase], heading: str) -> str:
    """The phrases as Markdown to put under the prose: heading, then each phrase in bold with
    its romanization in italics and its meaning."""
    if not phrases:
        return ""
    parts = [f"🗣 **{escape_markdown(heading)}**"]
    for phrase in phrases:
        notes = [f"_{escape_markdown(phrase.romanization)}_"] if phrase.romanization else []
        notes.append(escape_markdown(phrase.meaning))
        parts.append(f"**{escape_markdown(phrase.text)}**\n" + " — ".join(notes))
    return "\n\n".join(parts)


def phrase_keyboard(
    message_id: int | None, phrases: Sequence[Phrase], label: Callable[[str], str]
) -> InlineKeyboardMarkup | None:
    """One "Show to staff" button per phrase; `label(phrase)` words it."""
    if message_id is None or not phrases:
        return None
    rows = [
        [InlineKeyboardButton(label(_short(p.text)), callback_data=callback_data(message_id, i))]
        for i, p in enumerate(phrases)
    ]
    return InlineKeyboardMarkup(rows)


def callback_data(message_id: int, index: int) -> str:
    return f"{CALLBACK_PREFIX}:{message_id}:{index}"


def read_callback(data: str) -> tuple[int, int] | None:
    """(history row, phrase index) of a `say:` button; None for a forged one."""
    match = _CALLBACK.fullmatch(data)
    return (int(match[1]), int(match[2])) if match else None


def escape_markdown(text: str) -> str:
    """`text` shown as written, whatever Markdown punctuation it holds."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def _short(text: str) -> str:
    if len(text) <= MAX_BUTTON_LABEL_CHARS:
        return text
    end = MAX_BUTTON_LABEL_CHARS - 1
    while end > 1 and is_mark(text[end]):  # not between a letter and its marks
        end -= 1
    return text[:end].rstrip() + "…"
