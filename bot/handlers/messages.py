"""Photos, image files, follow-up texts, and everything else users send."""

from __future__ import annotations

from telegram import Update
from telegram.error import TelegramError

from bot.answering import download, prepare_image, run_job
from bot.context import BotContext
from bot.storage import Job, TooManyJobs
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
    job = await _accept(update, context, message.caption, attachment.file_id)
    if job is None:
        return
    try:
        data = await download(context.bot, attachment.file_id)
        image = await prepare_image(context.services, data)
    except TelegramError:
        await context.storage.set_job_status(job.id, "failed")
        await message.reply_html(context.t("image_download_failed"))
        return
    except ImageRejected as exc:
        await context.storage.set_job_status(job.id, "failed")
        await _reject_image(update, context, exc.reason, size=len(data))
        return
    except Exception:
        await context.storage.set_job_status(job.id, "failed")  # never left in flight
        raise
    await _run(context, job, image)


async def follow_up(update: Update, context: BotContext) -> None:
    """A plain text: a question about the last photo, answered with the conversation."""
    message = update.effective_message
    if not await _question_fits(update, context, message.text):
        return
    job = await _accept(update, context, message.text, None)
    if job is not None:
        await _run(context, job, None)


async def unsupported(update: Update, context: BotContext) -> None:
    """Stickers, voice, video, locations...: say what the bot can read."""
    await update.effective_message.reply_html(context.t("unsupported_message"))


async def _accept(
    update: Update, context: BotContext, question: str | None, image_file_id: str | None
) -> Job | None:
    """Record the request before anything else; None if Telegram delivered it before or
    the user already waits for too many answers (they are told)."""
    message = update.effective_message
    limit = context.settings.max_requests_in_flight
    try:
        return await context.storage.add_job(
            chat_id=message.chat_id,
            message_id=message.message_id,
            user_id=context.speaker_id,
            chat_type=message.chat.type,
            question=question,
            image_file_id=image_file_id,
            max_unfinished=limit,
            language=context.language,
        )
    except TooManyJobs:
        await message.reply_html(context.t("too_many_requests", limit=limit))
        return None


async def _run(context: BotContext, job: Job, image: bytes | None) -> None:
    think = bool(context.profile and context.profile.think)
    await run_job(
        context.bot, context.services, job, image=image, language=context.language, think=think
    )


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
