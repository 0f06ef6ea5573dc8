"""/diet: the traveller's diet and allergies, which every menu answer marks dishes for.

A keyboard toggles the ways of eating and the EU's 14 allergens in place; `/diet no
coriander, no raw egg` sets items in the traveller's own words. Buttons carry only
`diet:<code>`, `diet:clear` or `diet:done` (Telegram allows 64 bytes) and always change the
presser's own diet, in a private chat: a keyboard never shows one user's diet to others.
"""

from __future__ import annotations

import html
import re

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatType

from bot.context import BotContext
from inference import (
    DIET_ALLERGENS,
    DIET_CODES,
    DIET_WAYS,
    MAX_DIET_NOTE_CHARS,
    MAX_DIET_NOTES,
    Diet,
)

WAYS_PER_ROW = 2
ALLERGENS_PER_ROW = 3
ON = "✓ "
BUTTON_ACTIONS = frozenset((*DIET_CODES, "clear", "done"))
_SEPARATORS = re.compile(r"[,;\n]")


async def diet(update: Update, context: BotContext) -> None:
    """Show the diet with its keyboard, or set the traveller's own items from the text."""
    message = update.effective_message
    if update.effective_chat.type != ChatType.PRIVATE:
        await message.reply_html(context.t("diet_in_private"))
        return
    words = "".join((message.text or "").split(maxsplit=1)[1:])  # after "/diet" (or "/diet@bot")
    if not words.strip():
        current = await context.storage.get_diet(context.speaker_id)
        await message.reply_html(_view(context, current), reply_markup=_keyboard(context, current))
        return
    items = parse_items(words)
    if len(items) > MAX_DIET_NOTES:  # counted before repeats are dropped: "x, x, x, …" too
        await message.reply_html(context.t("diet_too_many", limit=MAX_DIET_NOTES))
        return
    if any(len(item) > MAX_DIET_NOTE_CHARS for item in items):
        await message.reply_html(context.t("diet_too_long", limit=MAX_DIET_NOTE_CHARS))
        return
    notes = _unique(items)
    saved = await context.storage.change_diet(
        context.speaker_id,
        lambda old: Diet(old.codes, notes),
        default_language=context.language,
    )
    await message.reply_html(context.t("diet_saved", items=describe(context, saved)))


async def press(
    query: CallbackQuery, context: BotContext, action: str
) -> tuple[str, InlineKeyboardMarkup | None] | None:
    """A button of the keyboard (toggle a code, clear all, or done): the message's new text
    and keyboard; None for a stale button or one that is not on a keyboard of ours."""
    chat = query.message.chat if query.message else None
    if chat is None or chat.id != query.from_user.id or action not in BUTTON_ACTIONS:
        return None
    user_id = query.from_user.id
    if action == "done":
        current = await context.storage.get_diet(user_id)
        return context.t("diet_saved", items=describe(context, current)), None

    def change(old: Diet) -> Diet:
        if action == "clear":
            return Diet()
        return Diet(tuple(set(old.codes) ^ {action}), old.notes)

    current = await context.storage.change_diet(user_id, change, default_language=context.language)
    return _view(context, current), _keyboard(context, current)


def parse_items(words: str) -> list[str]:
    """The traveller's items: split at commas, semicolons and lines, spaces collapsed."""
    return [item for part in _SEPARATORS.split(words) if (item := " ".join(part.split()))]


def _unique(items: list[str]) -> tuple[str, ...]:
    """Each item once, in its first spelling ("no coriander", "No Coriander")."""
    unique: dict[str, str] = {}
    for item in items:
        unique.setdefault(item.casefold(), item)
    return tuple(unique.values())


def describe(context: BotContext, current: Diet) -> str:
    """The diet as the user reads it (HTML): ways of eating; allergies; their own words."""
    ways = [context.t(f"diet_{code}") for code in current.codes if code in DIET_WAYS]
    allergens = [context.t(f"diet_{code}") for code in current.codes if code in DIET_ALLERGENS]
    parts = [", ".join(ways)] if ways else []
    if allergens:
        parts.append(context.t("diet_allergies", items=", ".join(allergens)))
    parts += [f"“{html.escape(note)}”" for note in current.notes]
    return "; ".join(parts) if parts else context.t("diet_nothing")


def _view(context: BotContext, current: Diet) -> str:
    return context.t("diet_current", items=describe(context, current))


def _keyboard(context: BotContext, current: Diet) -> InlineKeyboardMarkup:
    def button(code: str) -> InlineKeyboardButton:
        mark = ON if code in current.codes else ""
        return InlineKeyboardButton(mark + context.t(f"diet_{code}"), callback_data=f"diet:{code}")

    rows = _rows([button(c) for c in DIET_WAYS], WAYS_PER_ROW)
    rows += _rows([button(c) for c in DIET_ALLERGENS], ALLERGENS_PER_ROW)
    rows.append(
        [
            InlineKeyboardButton(context.t("diet_clear"), callback_data="diet:clear"),
            InlineKeyboardButton(context.t("diet_done"), callback_data="diet:done"),
        ]
    )
    return InlineKeyboardMarkup(rows)


def _rows(buttons: list[InlineKeyboardButton], size: int) -> list[list[InlineKeyboardButton]]:
    return [buttons[i : i + size] for i in range(0, len(buttons), size)]
