"""Work done for every update before the handlers (group -1), and the error handler."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from telegram import Message, Update
from telegram import User as TgUser
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, CommandHandler

from bot.addressing import is_addressed, is_group, is_service_message, sender_id
from bot.context import BotContext
from bot.logging import user_ref
from bot.storage import User
from inference import match_language

log = structlog.get_logger()


def speaker_id(update: Update) -> int | None:
    """Whom the bot keeps data about for this update (addressing.sender_id)."""
    message = update.message or update.edited_message
    if message is not None:
        return sender_id(message)
    user = update.effective_user
    return user.id if user else None


async def load_profile(update: Update, context: BotContext) -> None:
    """Bind log context, drop channel posts (no user, or copied into a group), service
    messages, group messages not meant for the bot (bot.addressing) and a user's flood
    (bot.update_budget), refuse users outside the allowlist, load the speaker's settings."""
    user = update.effective_user
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(update_id=update.update_id)
    speaker = speaker_id(update)
    message = update.message or update.edited_message
    if (
        user is None
        or speaker is None
        or (message and message.is_automatic_forward)
        or update.business_message
        or update.edited_business_message
    ):
        # channel posts, their automatic copies in the channel's discussion group, and a
        # Telegram Business account's chats (the bot would answer outside them)
        log.info("update_ignored", kind=_kind(update))
        raise ApplicationHandlerStop
    if is_service_message(update):
        log.info("update_ignored", kind="service_message")
        raise ApplicationHandlerStop
    if message and is_group(message) and not _addressed(message, context):
        # silent, and before the allowlist: a stranger chatting in the group is no request
        log.debug("update_ignored", kind="not_addressed")
        raise ApplicationHandlerStop
    budget = context.services.update_budget
    if not budget.take(speaker):
        log.info("update_throttled", kind=_kind(update))
        if budget.tell(speaker):  # once a minute: any more replies would add to the flood
            await _tell_too_fast(update, context, speaker)
        raise ApplicationHandlerStop
    if message and await _sent_before_forget(context, speaker, message.date):
        log.info("update_ignored", kind="sent_before_forget")  # Telegram delivered it again
        raise ApplicationHandlerStop
    context.speaker_id = speaker
    structlog.contextvars.bind_contextvars(user=user_ref(speaker))
    context.profile = await context.storage.get_user(speaker)
    if context.profile is None:
        # Not stored until the user changes a setting or talks to the model. Telegram's
        # language_code ("nl", "pt-br", "zh-hans") picks the answer language, the UI follows.
        context.profile = _transient_profile(speaker, _language_of(user, context))
    allowed = context.settings.allowed_user_ids
    if allowed and user.id not in allowed:
        log.info("user_refused")
        if update.callback_query:
            await update.callback_query.answer(context.t("not_allowed"))
        elif update.effective_message:
            await update.effective_message.reply_html(context.t("not_allowed"))
        raise ApplicationHandlerStop


async def _tell_too_fast(update: Update, context: BotContext, speaker: int) -> None:
    """Some of the speaker's updates were skipped: say so, in their language."""
    stored = await context.storage.get_user(speaker)
    language = stored.language if stored else _language_of(update.effective_user, context)
    text = context.services.texts.get(language, "too_fast")
    try:
        if update.callback_query:
            await update.callback_query.answer(text, show_alert=True)
        elif update.effective_message:
            await update.effective_message.reply_html(text)
    except TelegramError as exc:
        log.warning("too_fast_not_sent", error=str(exc))


async def on_error(update: object, context: BotContext) -> None:
    """Log any exception a handler raised and tell the user something went wrong."""
    log.error("handler_failed", exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat:
        try:
            await context.bot.send_message(update.effective_chat.id, context.t("error_generic"))
        except Exception:
            log.warning("error_reply_failed")


def _language_of(user: TgUser, context: BotContext) -> str:
    return match_language(user.language_code or "") or context.settings.default_language


def _addressed(message: Message, context: BotContext) -> bool:
    """Meant for the bot (bot.addressing); a page of an album is when a page before it was
    (the app puts the caption, and so the mention, on the first page). Checked before any
    await: updates start in the order Telegram sent them."""
    bot, albums = context.bot, context.services.albums
    sender = message.from_user.id if message.from_user else 0
    if is_addressed(message, bot.id, bot.username or "", _own_commands(context)):
        if message.media_group_id:
            albums.remember_addressed(message.chat_id, message.media_group_id, sender)
        return True
    return bool(message.media_group_id) and albums.is_addressed(
        message.chat_id, message.media_group_id, sender
    )


def _own_commands(context: BotContext) -> frozenset[str]:
    """Every command name (aliases too) the application has a handler for."""
    return frozenset(
        name
        for handlers in context.application.handlers.values()
        for handler in handlers
        if isinstance(handler, CommandHandler)
        for name in handler.commands
    )


async def _sent_before_forget(context: BotContext, speaker: int, sent: datetime) -> bool:
    """Telegram dates messages to the second: one of the erasing second itself is taken,
    so a new message right after /forget is never lost."""
    erased_at = await context.storage.get_erased_at(speaker)
    return erased_at is not None and sent < erased_at.replace(microsecond=0)


def _kind(update: Update) -> str:
    """The update's kind (e.g. "channel_post"), for logs: never its content."""
    fields = update.to_dict()
    return next((key for key in fields if key != "update_id"), "unknown")


def _transient_profile(user_id: int, language: str) -> User:
    """Settings for a user with no stored row: nothing is written until they need it."""
    now = datetime.now(UTC)
    return User(user_id=user_id, language=language, think=False, created_at=now, updated_at=now)
