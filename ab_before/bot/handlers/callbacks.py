"""Inline keyboard buttons: language choice and /forget confirmation."""

from __future__ import annotations

import structlog
from telegram import Update
from telegram.constants import ParseMode

from bot.context import BotContext
from bot.logging import user_ref

log = structlog.get_logger()


async def button(update: Update, context: BotContext) -> None:
    """Dispatch `lang:<code>` and `forget:yes|no`; anything else is a stale or forged button."""
    query = update.callback_query
    kind, _, value = (query.data or "").partition(":")
    user_id = query.from_user.id
    if kind == "lang" and value in context.services.texts.languages:
        context.profile = await context.storage.set_language(user_id, value)
        await query.answer()
        language = context.services.texts.language_name(value)
        await query.edit_message_text(
            context.t("lang_set", language=language), parse_mode=ParseMode.HTML
        )
    elif kind == "forget" and value == "yes":
        count = await context.storage.delete_user_data(user_id)
        log.info("user_data_erased", user=user_ref(user_id), rows=count)
        await query.answer()
        await query.edit_message_text(context.t("forget_done", count=count))
        context.profile = None
    elif kind == "forget" and value == "no":
        await query.answer()
        await query.edit_message_text(context.t("forget_cancelled"))
    else:
        log.warning("unknown_callback", data=(query.data or "")[:64])
        await query.answer(context.t("button_expired"), show_alert=False)
