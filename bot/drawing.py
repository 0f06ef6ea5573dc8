""" "Show on the photo": the translation drawn on the photo an answer was about.

A second model request on the stored photo asks only for the regions block
(inference.regions_chat; docs/overlay.md says why not in every answer). The reply is read
defensively (inference.read_regions), the boxes are snapped to the lines a text detector finds
(bot/text_lines.py) and the picture is drawn (bot/overlay.py) off the event loop. A reply
nothing can be drawn from, a photo Telegram no longer has, a busy queue: a short localized
note, never an error; the answer above stays as it was.

A button names the answer's history row and the page (`ovl:<row>:<page>`), never the photo:
it is found again from the stored turn when pressed, so once the answer is erased (/forget,
retention) the button finds nothing.
"""

from __future__ import annotations

import asyncio
import re

import structlog
from telegram import Bot, InlineKeyboardButton, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from bot.context import Services
from bot.logging import user_ref
from bot.overlay import render_overlay
from bot.storage import StoredMessage
from inference import (
    MAX_REGIONS,
    Finished,
    ImageRejected,
    InferenceError,
    Request,
    Sampling,
    read_regions,
    regions_chat,
)

log = structlog.get_logger()

CALLBACK_PREFIX = "ovl"
MAX_PAGES = 10  # Telegram's album limit
PAGE_BUTTONS_PER_ROW = 5
_CALLBACK = re.compile(r"ovl:([0-9]{1,18}):([0-9])")


def overlay_rows(message_id: int | None, pages: int, t) -> list[list[InlineKeyboardButton]]:
    """ "Show on the photo" under an answer about `pages` photos: one button, or one a page
    of an album (boxes are per photo, so each page is its own request)."""
    if message_id is None or pages < 1:
        return []
    if pages == 1:
        data = callback_data(message_id, 0)
        return [[InlineKeyboardButton(t("overlay_button"), callback_data=data)]]
    buttons = [
        InlineKeyboardButton(
            t("overlay_page_button", page=page + 1), callback_data=callback_data(message_id, page)
        )
        for page in range(min(pages, MAX_PAGES))
    ]
    return [
        buttons[i : i + PAGE_BUTTONS_PER_ROW] for i in range(0, len(buttons), PAGE_BUTTONS_PER_ROW)
    ]


def callback_data(message_id: int, page: int) -> str:
    return f"{CALLBACK_PREFIX}:{message_id}:{page}"


def read_callback(data: str) -> tuple[int, int] | None:
    """(history row, page) of an `ovl:` button; None for a forged one."""
    match = _CALLBACK.fullmatch(data)
    return (int(match[1]), int(match[2])) if match else None


async def draw_on_photo(
    bot: Bot,
    services: Services,
    answer: StoredMessage,
    turn: StoredMessage,
    page: int,
    *,
    language: str,
    reply_to: int,
) -> None:
    """Send page `page` of `turn`'s photos with the translation drawn on it, as a reply to
    `reply_to` in the answer's chat; or a note saying why not. Raises only a cancellation
    (/forget, the bot stopping) and Telegram's refusal to send the note itself."""

    def t(key: str, /, **values: object) -> str:
        return services.texts.get(language, key, **values)

    chat_id = answer.chat_id
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True)
    note = await _draw(bot, services, answer, turn, page, language, reply)
    if note is not None:
        await bot.send_message(chat_id, t(note), reply_parameters=reply)


async def _draw(
    bot: Bot,
    services: Services,
    answer: StoredMessage,
    turn: StoredMessage,
    page: int,
    language: str,
    reply: ReplyParameters,
) -> str | None:
    """The picture sent; or the key of the note to send instead."""
    from bot.answering import download, prepare_image  # answering imports this module

    settings = services.settings
    try:
        await bot.send_chat_action(answer.chat_id, ChatAction.UPLOAD_PHOTO)
        photo = await prepare_image(services, await download(bot, turn.image_file_ids[page]))
    except (TelegramError, ImageRejected) as exc:
        log.warning("overlay_photo_unavailable", error=type(exc).__name__)
        return "overlay_photo_gone"
    request = Request(
        language=language,
        chat=regions_chat(language, photo, max_regions=MAX_REGIONS),
        # a block of up to MAX_REGIONS regions is longer than most answers
        max_new_tokens=2 * settings.max_new_tokens,
        sampling=Sampling(settings.temperature, settings.top_p, settings.top_k),
        owner=user_ref(answer.user_id),
        photo_owners=() if turn.photo_from is None else (user_ref(turn.photo_from),),
    )
    try:
        finished = await _collect(services, request)
    except InferenceError as exc:
        services.record_failure(exc.kind)
        log.warning("overlay_request_failed", kind=exc.kind)
        return "overlay_busy" if exc.kind == "queue_full" else "overlay_failed"
    regions = read_regions(finished.text)
    log.info("overlay_regions", status=regions.status, num_regions=len(regions.regions))
    if not regions.regions:
        return "overlay_unreadable"
    try:
        lines = await services.text_lines.detect(photo)
        fonts = services.fonts
        drawn = await asyncio.to_thread(render_overlay, photo, regions.regions, fonts, lines)
    except Exception:  # a picture not drawn must not leave the traveller without a word
        log.exception("overlay_not_drawn")
        return "overlay_failed"
    caption = [services.texts.get(language, "overlay_caption")]
    if drawn.num_in_legend:
        caption.append(services.texts.get(language, "overlay_caption_legend"))
    try:
        sent = await bot.send_photo(
            answer.chat_id, drawn.picture, caption=" ".join(caption), reply_parameters=reply
        )
    except BadRequest as exc:  # a picture Telegram refuses (its size): the note instead
        log.warning("overlay_refused", error=str(exc)[:80])
        return "overlay_failed"
    if len(turn.image_file_ids) == 1:  # a group member's reply to it asks about the photo
        await services.storage.link_answer_message(answer, sent.message_id)
    log.info(
        "overlay_sent",
        message_id=answer.id,
        num_in_place=drawn.num_in_place,
        num_in_legend=drawn.num_in_legend,
        num_lines=len(lines),
    )
    return None


async def _collect(services: Services, request: Request) -> Finished:
    """The whole reply (nothing is streamed into the chat: it is JSON for the drawing)."""
    from bot.answering import RequestTimedOut

    events = services.worker.submit(request)
    try:
        async with asyncio.timeout(services.settings.request_timeout_s):
            async for event in events:
                if isinstance(event, Finished):
                    return event
    except TimeoutError:
        raise RequestTimedOut("no regions in time") from None
    finally:
        await events.aclose()
    raise InferenceError("the worker ended the stream without an answer")
