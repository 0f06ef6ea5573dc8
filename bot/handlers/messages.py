"""Photos, image files, follow-up texts, and everything else users send."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError

from bot import albums
from bot.addressing import is_group, replied_message, sender_id, without_mention
from bot.answering import download, prepare_image, run_job
from bot.context import BotContext
from bot.photo_check import DEFAULT_SOFT_TOKENS, check_photo
from bot.storage import NO_REPLY, AlbumPart, Job, Reply, TooManyJobs
from inference import ImageRejected

log = structlog.get_logger()

MEGABYTE = 1024 * 1024
# a user's photos held for "Ask anyway" (outside their questions in flight); the oldest
# beyond this expire, or a user could keep as many as they send
MAX_HELD_PHOTOS = 5


@dataclass(frozen=True)
class Photo:
    file_id: str
    file_size: int | None
    # a replied photo's: what its message shows of itself, the only text of another
    # member's that may reach the prompt (a caption, the bot's answer as the group saw it),
    # and whose photo it is
    reply: Reply = NO_REPLY


async def photo(update: Update, context: BotContext) -> None:
    """A photo or an image sent as a file: read, translate and explain it."""
    message = update.effective_message
    attachment = message.photo[-1] if message.photo else message.document
    question = _question(context, message, message.caption)
    if message.media_group_id:
        await _album_part(update, context, question, attachment)
        return
    photo = Photo(attachment.file_id, attachment.file_size)
    await _ask_about_photo(update, context, question, photo, check=True)


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


async def ask_anyway(update: Update, context: BotContext, job_id: int, owner: int) -> None:
    """The "Ask anyway" button under a photo the check flagged, pressed for `owner` (its
    sender: bot.handlers.callbacks checks): runs the held job, once; a second tap, or one
    after /forget, runs nothing."""
    query = update.callback_query
    limit = context.settings.max_requests_in_flight
    try:
        job = await context.storage.release_job(job_id, owner, max_unfinished=limit)
    except TooManyJobs:
        await query.answer(context.t("too_many_requests", limit=limit), show_alert=True)
        return
    if job is None:
        await query.answer(context.t("button_expired"))
        return
    await query.answer()
    with contextlib.suppress(BadRequest):  # the hint stays, without its button
        await query.edit_message_reply_markup(None)
    image = await _prepare(context, job, job.image_file_id, reply=None)
    if image is not None:
        await _run(context, job, image)


async def _ask_about_photo(
    update: Update, context: BotContext, question: str | None, photo: Photo, *, check=False
) -> None:
    """Accept, fetch and answer; with `check`, a photo the quick check flags is held with
    a hint to retake it and an "Ask anyway" button (the speaker's own photos only: a
    friend asking about another member's photo cannot retake it)."""
    message = update.effective_message
    if not await _question_fits(update, context, question):
        return
    limit = context.settings.max_image_bytes
    if photo.file_size and photo.file_size > limit:
        await _reject_image(update, context, "too_large", size=photo.file_size)
        return
    job = await _accept(update, context, question, photo)
    if job is None:
        return
    image = await _prepare(context, job, photo.file_id, reply=message)
    if image is None:
        return
    if check:
        soft_tokens = context.settings.image_soft_tokens or DEFAULT_SOFT_TOKENS
        problem = await asyncio.to_thread(check_photo, image, soft_tokens)
        if problem is not None:
            await context.storage.hold_job(job.id, max_held=MAX_HELD_PHOTOS)
            log.info("photo_held", job_id=job.id, problem=problem)
            button = InlineKeyboardButton(context.t("ask_anyway"), callback_data=f"anyway:{job.id}")
            await message.reply_html(
                context.t(f"photo_{problem}"), reply_markup=InlineKeyboardMarkup([[button]])
            )
            return
    await _run(context, job, image)


async def _prepare(
    context: BotContext, job: Job, file_id: str, *, reply: Message | None
) -> bytes | None:
    """The job's photo, downloaded and normalized; None when it cannot be (the job failed,
    the user told: as a reply to `reply`, else in the job's chat)."""
    data = b""
    try:
        data = await download(context.bot, file_id)
        return await prepare_image(context.services, data)
    except TelegramError:
        text = context.t("image_download_failed")
    except ImageRejected as exc:
        text = _rejection(context, exc.reason, size=len(data))
    except Exception:
        await context.storage.set_job_status(job.id, "failed")  # never left in flight
        raise
    await context.storage.set_job_status(job.id, "failed")
    if reply is not None:
        await reply.reply_html(text)
    else:
        await context.bot.send_message(job.chat_id, text)
    return None


async def _album_part(
    update: Update, context: BotContext, question: str | None, attachment
) -> None:
    """One page of an album: stored; the album is answered once, when all have come (or
    refused whole, its question too long: bot.albums)."""
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
    the group sees it), or the one the bot's answer, or translation drawn on it, is about
    (stored when it was sent; gone with its sender's /forget)."""
    reply = replied_message(message)
    if reply is None:
        return None
    bot, speaker = context.bot, context.speaker_id
    if reply.from_user is not None and reply.from_user.id == bot.id:
        answered = await context.storage.get_answered_photo(reply.chat_id, reply.message_id)
        if answered is None:  # and never the bot's own picture, a copy of someone's photo
            return None
        owner = answered.sender if answered.sender != speaker else None
        quoted_from = answered.asker if reply.text else None  # whom the answer was for
        return Photo(answered.file_id, None, Reply(reply.text or None, quoted_from, owner))
    attachment = reply.photo[-1] if reply.photo else None
    if reply.document and (reply.document.mime_type or "").startswith("image/"):
        attachment = attachment or reply.document
    if attachment is None:
        return None
    caption = without_mention(reply, reply.caption, bot.id, bot.username or "") or None
    sender = sender_id(reply)
    owner = sender if sender != speaker else None
    about = Reply(caption, caption and sender, owner)
    return Photo(attachment.file_id, attachment.file_size, about)


async def unsupported(update: Update, context: BotContext) -> None:
    """Stickers, voice, video, locations...: say what the bot can read."""
    await update.effective_message.reply_html(context.t("unsupported_message"))


async def _accept(
    update: Update, context: BotContext, question: str | None, photo: Photo | None
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
            image_file_id=photo.file_id if photo else None,
            max_unfinished=limit,
            language=context.language,
            reply=photo.reply if photo else NO_REPLY,
        )
    except TooManyJobs:
        await message.reply_html(context.t("too_many_requests", limit=limit))
        return None


async def _run(context: BotContext, job: Job, image: bytes | None) -> None:
    think = bool(context.profile and context.profile.think)
    await run_job(
        context.bot,
        context.services,
        job,
        images=() if image is None else (image,),
        language=context.language,
        think=think,
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
    await update.effective_message.reply_html(_rejection(context, reason, size=size))


def _rejection(context: BotContext, reason: str, *, size: int) -> str:
    return context.t(
        f"image_{reason}",
        size_mb=f"{size / MEGABYTE:.1f}",
        limit_mb=f"{context.settings.max_image_bytes / MEGABYTE:.0f}",
    )
