"""Photos, image files, follow-up texts, and everything else users send."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Message, Update
from telegram.error import TelegramError

from bot import albums
from bot.addressing import is_group, replied_message, without_mention
from bot.answering import download, prepare_image, run_job
from bot.context import BotContext
from bot.storage import AlbumPart, Job, TooManyJobs
from inference import ImageRejected

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class Photo:
    file_id: str
    file_size: int | None
    # what the message replied to shows of itself, the only text of another member's that
    # may reach the prompt: a photo's caption, or the bot's answer as the group saw it
    quoted: str | None = None


async def photo(update: Update, context: BotContext) -> None:
    """A photo or an image sent as a file: read, translate and explain it."""
    message = update.effective_message
    attachment = message.photo[-1] if message.photo else message.document
    question = _question(context, message, message.caption)
    if message.media_group_id:
        await _album_part(update, context, question, attachment)
        return
    await _ask_about_photo(
        update, context, question, Photo(attachment.file_id, attachment.file_size)
    )


async def follow_up(update: Update, context: BotContext) -> None:
    """A plain text: a question about the last photo, answered with the conversation. In a
    group, a reply to a photo, or to the bot's answer about one, asks about that photo."""
    message = update.effective_message
    question = _question(context, message, message.text)
    if is_group(message):
        replied = await _replied_photo(context, message)
        if replied is not None:
            await _ask_about_photo(update, context, question, replied)
            return
        if not question:  # only the mention
            await message.reply_html(context.t("group_how_to", bot=f"@{context.bot.username}"))
            return
    if not await _question_fits(update, context, question):
        return
    job = await _accept(update, context, question, None)
    if job is not None:
        await _run(context, job, None)


async def _ask_about_photo(
    update: Update, context: BotContext, question: str | None, photo: Photo
) -> None:
    message = update.effective_message
    if not await _question_fits(update, context, question):
        return
    limit = context.settings.max_image_bytes
    if photo.file_size and photo.file_size > limit:
        await _reject_image(update, context, "too_large", size=photo.file_size)
        return
    job = await _accept(update, context, question, photo.file_id)
    if job is None:
        return
    try:
        data = await download(context.bot, photo.file_id)
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
    await _run(context, job, image, quoted=photo.quoted)


async def _album_part(
    update: Update, context: BotContext, question: str | None, attachment
) -> None:
    """One page of an album: stored; the album is answered once, when all have come."""
    if not await _question_fits(update, context, question):
        return
    message = update.effective_message
    part = AlbumPart(
        chat_id=message.chat_id,
        message_id=message.message_id,
        user_id=context.speaker_id,
        media_group_id=message.media_group_id,
        chat_type=message.chat.type,
        file_id=attachment.file_id,
        file_size=attachment.file_size,
        caption=question,
    )
    await albums.add_part(context.bot, context.services, part, language=context.language)


def _question(context: BotContext, message: Message, text: str | None) -> str | None:
    """The text or caption as the question; in a group without the mention of the bot."""
    if text and is_group(message):
        text = without_mention(message, text, context.bot.id, context.bot.username or "")
    return text or None


async def _replied_photo(context: BotContext, message: Message) -> Photo | None:
    """The photo of the message this one replies to: a photo or image file (any member's:
    the group sees it), or the bot's answer about a photo (stored when it was sent)."""
    reply = replied_message(message)
    if reply is None:
        return None
    bot = context.bot
    attachment = reply.photo[-1] if reply.photo else None
    if (
        attachment is None
        and reply.document
        and (reply.document.mime_type or "").startswith("image/")
    ):
        attachment = reply.document
    if attachment is not None:
        caption = without_mention(reply, reply.caption, bot.id, bot.username or "")
        return Photo(attachment.file_id, attachment.file_size, caption or None)
    if reply.from_user is None or reply.from_user.id != bot.id:
        return None
    file_id = await context.storage.get_answered_photo(reply.chat_id, reply.message_id)
    return Photo(file_id, None, reply.text or None) if file_id else None


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


async def _run(
    context: BotContext, job: Job, image: bytes | None, *, quoted: str | None = None
) -> None:
    think = bool(context.profile and context.profile.think)
    await run_job(
        context.bot,
        context.services,
        job,
        images=() if image is None else (image,),
        language=context.language,
        think=think,
        quoted=quoted,
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
