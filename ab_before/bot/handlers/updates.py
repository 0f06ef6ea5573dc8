"""Work done for every update before the handlers (group -1), and the error handler."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from telegram import Update
from telegram.ext import ApplicationHandlerStop

from bot.context import BotContext
from bot.logging import user_ref
from bot.storage import User

log = structlog.get_logger()


async def load_profile(update: Update, context: BotContext) -> None:
    """Bind log context, refuse users outside the allowlist, load the user's settings."""
    user = update.effective_user
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(update_id=update.update_id)
    if user is None:
        return
    structlog.contextvars.bind_contextvars(user=user_ref(user.id))
    context.profile = await context.storage.get_user(user.id)
    if context.profile is None:
        # Not stored until the user changes a setting or talks to the model.
        texts = context.services.texts
        language = (
            texts.match_language(user.language_code or "") or context.settings.default_language
        )
        context.profile = _transient_profile(user.id, language)
    allowed = context.settings.allowed_user_ids
    if allowed and user.id not in allowed:
        log.info("user_refused")
        if update.callback_query:
            await update.callback_query.answer(context.t("not_allowed"))
        elif update.effective_message:
            await update.effective_message.reply_html(context.t("not_allowed"))
        raise ApplicationHandlerStop


async def on_error(update: object, context: BotContext) -> None:
    """Log any exception a handler raised and tell the user something went wrong."""
    log.error("handler_failed", exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat:
        try:
            await context.bot.send_message(update.effective_chat.id, context.t("error_generic"))
        except Exception:
            log.warning("error_reply_failed")


def _transient_profile(user_id: int, language: str) -> User:
    """Settings for a user with no stored row: nothing is written until they need it."""
    now = datetime.now(UTC)
    return User(user_id=user_id, language=language, think=False, created_at=now, updated_at=now)
