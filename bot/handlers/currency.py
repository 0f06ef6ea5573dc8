"""/currency: the traveller's home currency, in which prices read from photos are also given
(`/currency EUR`), and rates they set themselves (`/currency JPY 0.0062`: 1 JPY = 0.0062 of
the home currency), which win over the ECB's reference rates (bot/currency.py)."""

from __future__ import annotations

import html
import math

from babel.numbers import format_decimal, get_currency_name
from telegram import Update

from bot.context import BotContext
from bot.currency import KNOWN_CURRENCIES

MAX_RATE = 1e9
MAX_CODE_SHOWN = 12  # of what the user typed, echoed in "I don't know the currency …"


async def currency(update: Update, context: BotContext) -> None:
    """Show the currency, set it, or set a rate of another currency to it."""
    message = update.effective_message
    words = (message.text or "").split()[1:]
    if not words:
        await message.reply_html(await describe(context))
    elif len(words) == 1:
        await message.reply_html(await set_home(context, words[0]))
    elif len(words) == 2:
        await message.reply_html(await set_rate(context, words[0], words[1]))
    else:
        await message.reply_html(context.t("currency_usage"))


async def describe(context: BotContext) -> str:
    choice = await context.storage.get_currency(context.speaker_id)
    if choice.code is None:
        return context.t("currency_usage")
    return context.t(
        "currency_current",
        code=choice.code,
        name=html.escape(_name(context, choice.code)),
        rates=own_rates_text(context, choice.own_rates),
    )


async def set_home(context: BotContext, word: str) -> str:
    code = word.upper()
    if code not in KNOWN_CURRENCIES:
        return context.t("currency_unknown", code=html.escape(word[:MAX_CODE_SHOWN]))
    await context.storage.set_currency(context.speaker_id, code, default_language=context.language)
    return context.t("currency_set", code=code, name=html.escape(_name(context, code)))


async def set_rate(context: BotContext, word: str, rate_text: str) -> str:
    choice = await context.storage.get_currency(context.speaker_id)
    if choice.code is None:
        return context.t("currency_need_home")
    code = word.upper()
    if code not in KNOWN_CURRENCIES:
        return context.t("currency_unknown", code=html.escape(word[:MAX_CODE_SHOWN]))
    rate = _rate(rate_text)
    if rate is None or code == choice.code:
        return context.t("currency_rate_invalid")
    await context.storage.set_own_rate(context.speaker_id, code, rate)
    return context.t("currency_rate_set", code=code, rate=_decimal(context, rate), home=choice.code)


def own_rates_text(context: BotContext, rates: dict[str, float]) -> str:
    return ", ".join(f"1 {c} = {_decimal(context, r)}" for c, r in rates.items()) or "–"


def _rate(text: str) -> float | None:
    try:
        rate = float(text.replace(",", "."))
    except ValueError:
        return None
    return rate if math.isfinite(rate) and 0 < rate < MAX_RATE else None


def _name(context: BotContext, code: str) -> str:
    return get_currency_name(code, locale=context.services.texts.ui_language(context.language))


def _decimal(context: BotContext, value: float) -> str:
    locale = context.services.texts.ui_language(context.language)
    return format_decimal(value, format="#,##0.########", locale=locale)
