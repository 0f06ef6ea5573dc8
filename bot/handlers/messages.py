"""Photos, image files, follow-up texts, and everything else users send."""

from __future__ import annotations

from telegram import Update
from telegram.error import TelegramError

from bot.answering import answer, download, prepare_image
from bot.context import BotContext
from inference import ImageRejected

MEGABYTE = 1024 * 1024


async def photo(update: Update, context: BotContext) -> None:
    """A photo or an image sent as a file: read, translate and explain it."""
    message = update.effective_message
    attachment = message.photo[-1] if message.photo else message.document
    if not await _question_fits(update, context, message.caption):
        return
    limit = context.settings.max_image_bytes
    if attachment.file_size and attachment.file_size > limit:
        await _reject_image(update, context, "too_large", size=attachment.file_size)
        return
    try:
        data = await download(context, attachment.file_id)
    except TelegramError:
        await message.reply_html(context.t("image_download_failed"))
        return
    try:
        image = await prepare_image(context, data)
    except ImageRejected as exc:
        await _reject_image(update, context, exc.reason, size=len(data))
        return
    await answer(
        message, context, question=message.caption, image=image, image_file_id=attachment.file_id
    )


async def follow_up(update: Update, context: BotContext) -> None:
    """A plain text: a question about the last photo, answered with the conversation."""
    message = update.effective_message
    if await _question_fits(update, context, message.text):
        await answer(message, context, question=message.text)


async def unsupported(update: Update, context: BotContext) -> None:
    """Stickers, voice, video, locations...: say what the bot can read."""
    await update.effective_message.reply_html(context.t("unsupported_message"))


async def _question_fits(update: Update, context: BotContext, text: str | None) -> bool:
    limit = context.settings.max_question_chars
    if text and len(text) > limit:
        await update.effective_message.reply_html(
            context.t("question_too_long", length=len(text), limit=limit)
        )
        return False
    return True


async def _reject_image(update: Update, context: BotContext, reason: str, *, size: int) -> None:
    text = context.t(
        f"image_{reason}",
        size_mb=f"{size / MEGABYTE:.1f}",
        limit_mb=f"{context.settings.max_image_bytes / MEGABYTE:.0f}",
    )
    await update.effective_message.reply_html(text)
