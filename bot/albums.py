"""An album (several photos or image files sent together) as one request: its parts are
stored as they arrive, collected (bot.album_collector), then closed into one job whose
pages are the images of one user turn, answered once. The caption of any page is the
question. Pages that cannot be read are named to the user; the others are answered."""

from __future__ import annotations

import functools

import structlog
from telegram import Bot, ReplyParameters
from telegram.error import TelegramError

from bot.album_collector import MAX_PARTS
from bot.answering import download, prepare_image, run_job
from bot.context import Services
from bot.storage import AlbumPart, TooManyJobs
from inference import ImageRejected

log = structlog.get_logger()


async def add_part(bot: Bot, services: Services, part: AlbumPart, *, language: str) -> None:
    """Store one arrived part and (re)start its album's quiet window; a part Telegram
    delivered before changes nothing."""
    if not await services.storage.add_album_part(part):
        log.info("album_part_again")
        return
    await schedule(bot, services, part.chat_id, part.media_group_id, part.user_id, language)


async def schedule(
    bot: Bot, services: Services, chat_id: int, group: str, user_id: int, language: str
) -> None:
    """Count the album's stored parts and let the collector close it when it is time."""
    parts = await services.storage.get_open_album(chat_id, group)
    if not parts:
        return
    close = functools.partial(close_album, bot, services, chat_id, group, language)
    services.albums.part_arrived((chat_id, group), user_id, len(parts), close)


async def resume_albums(bot: Bot, services: Services) -> int:
    """After a restart: close the albums whose parts were still arriving."""
    albums = await services.storage.get_open_albums()
    for chat_id, group in albums:
        parts = await services.storage.get_open_album(chat_id, group)
        user = await services.storage.get_user(parts[0].user_id) if parts else None
        language = user.language if user else services.settings.default_language
        if parts:
            await schedule(bot, services, chat_id, group, parts[0].user_id, language)
    if albums:
        log.info("albums_resumed", count=len(albums))
    return len(albums)


async def close_album(
    bot: Bot, services: Services, chat_id: int, group: str, language: str
) -> None:
    """One job for the album's parts stored so far; its readable pages answered at once."""
    storage, settings = services.storage, services.settings
    parts = (await storage.get_open_album(chat_id, group))[:MAX_PARTS]
    if not parts:
        return

    def t(key: str, /, **values: object) -> str:
        return services.texts.get(language, key, **values)

    first = parts[0]
    reply = ReplyParameters(first.message_id, allow_sending_without_reply=True)
    question = _question(parts)
    # refused whole, as a single photo's would be: not answered without the page it is on
    too_long = question is not None and len(question) > settings.max_question_chars
    try:
        job = await storage.close_album(
            parts,
            question=None if too_long else question,
            file_ids=[] if too_long else [part.file_id for part in parts],
            max_unfinished=settings.max_requests_in_flight,
            language=language,
        )
    except TooManyJobs:
        limit = settings.max_requests_in_flight
        await bot.send_message(chat_id, t("too_many_requests", limit=limit), reply_parameters=reply)
        return
    if job is None:
        return
    if too_long:
        await storage.set_job_status(job.id, "failed")
        limit = settings.max_question_chars
        text = t("question_too_long", length=len(question), limit=limit)
        await bot.send_message(chat_id, text, reply_parameters=reply)
        return
    log.info("album_closed", job_id=job.id, pages=len(parts))
    try:
        # one page after another: a raw page (up to max_image_bytes) at a time in memory
        pages = [await _page(bot, services, part) for part in parts]
    except Exception:
        await storage.set_job_status(job.id, "failed")  # never left in flight
        raise
    readable = [(part, image) for part, image in zip(parts, pages, strict=True) if image]
    unreadable = [n for n, image in enumerate(pages, start=1) if image is None]
    if not readable:
        await storage.set_job_status(job.id, "failed")
        await bot.send_message(chat_id, t("album_unreadable"), reply_parameters=reply)
        return
    if unreadable:
        await storage.set_job_file_ids(job.id, [part.file_id for part, _ in readable])
        job = await storage.get_job(job.id)
        if job is None:  # erased meanwhile
            return
        numbers = ", ".join(map(str, unreadable))
        text = t("album_pages_unreadable", count=len(unreadable), pages=numbers)
        await bot.send_message(chat_id, text, reply_parameters=reply)
    user = await storage.get_user(job.user_id)
    await run_job(
        bot,
        services,
        job,
        images=tuple(image for _, image in readable),
        language=language,
        think=bool(user and user.think),
    )


async def _page(bot: Bot, services: Services, part: AlbumPart) -> bytes | None:
    """A page's normalized image; None when it cannot be used (too large, not an image,
    corrupt, not downloadable): the rest of the album is still answered."""
    if part.file_size and part.file_size > services.settings.max_image_bytes:
        log.info("album_page_unreadable", reason="too_large")
        return None
    try:
        return await prepare_image(services, await download(bot, part.file_id))
    except ImageRejected as exc:
        log.info("album_page_unreadable", reason=exc.reason)
    except TelegramError as exc:
        log.warning("album_page_not_downloaded", error=type(exc).__name__)
    return None


def _question(parts: list[AlbumPart]) -> str | None:
    """The captions of the pages, in page order (usually one: the app puts it on the first
    or on the one the sender captioned), as one question."""
    captions = [part.caption.strip() for part in parts if part.caption and part.caption.strip()]
    return "\n".join(dict.fromkeys(captions)) or None
