"""Run one job: ask the model about a photo or a follow-up, stream the answer into the
chat, store it, deliver it. Used by the handlers and by recovery after a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from dataclasses import replace
from datetime import timedelta

import structlog
from telegram import Bot, InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.context import Services
from bot.currency import prices_markdown
from bot.drawing import draw_on_photo, overlay_rows
from bot.logging import user_ref
from bot.phrases import escape_markdown, phrase_keyboard, phrases_markdown
from bot.render import render_messages
from bot.storage import Job, StoredMessage
from bot.streaming import AnswerStream
from inference import (
    BlockSplitter,
    Delta,
    Finished,
    ImageLimits,
    ImageRejected,
    InferenceError,
    Price,
    Queued,
    QueueFull,
    Request,
    Sampling,
    Started,
    Turn,
    split_answer,
)

log = structlog.get_logger()

MAX_ATTEMPTS = 3  # a job that crashed the bot this often is given up
DELIVERY_ATTEMPTS = 5  # sends of an answer's messages before the job is given up
ROOM_WAIT_S = 0.5  # a recovered job's wait for room in a full queue, between tries
ERROR_KEYS = {
    "queue_full": "error_busy",
    "worker_stopped": "error_stopping",
    "engine_error": "error_engine",
    "timeout": "error_timeout",
}


async def run_job(
    bot: Bot,
    services: Services,
    job: Job,
    *,
    images: tuple[bytes, ...],
    language: str,
    think: bool,
    notice: str | None = None,
    wait_for_room: bool = False,
) -> None:
    """One turn: history → request → streamed answer → stored → delivered. The job ends
    delivered or failed, whatever happens, unless the bot stops meanwhile (then it is
    recovered at the next start) or its user erases it with /forget (then it is dropped), or
    the group member whose photo it asks about does (then its user is told)."""
    async with services.user_locks.hold(job.user_id):
        if not images:  # a follow-up sees the history's photo again: maybe another's
            history_turns = services.settings.max_history_turns
            photo_from = await services.storage.mark_history_photo(job, max_turns=history_turns)
            job = replace(job, photo_from=photo_from)
        erased_by = None
        stream = AnswerStream(
            bot,
            job.chat_id,
            job.message_id,
            is_private=job.chat_type == "private",
            interval_s=services.settings.stream_interval_s,
        )
        try:
            work = _start(
                bot, services, job, stream, images, language, think, notice, wait_for_room
            )
            erased_by = await run_erasable(services, job.owners, work)
            if erased_by is not None:
                log.info("answer_erased", job_id=job.id)
                await stream.discard()
        finally:
            stream.close()
    if erased_by is not None and erased_by != job.user_id:
        await _tell_photo_withdrawn(bot, services, job, language)


async def _tell_photo_withdrawn(bot: Bot, services: Services, job: Job, language: str) -> None:
    """The member whose photo the job asked about said /forget: its answer was stopped."""
    reply = ReplyParameters(job.message_id, allow_sending_without_reply=True)
    text = services.texts.get(language, "photo_withdrawn")
    try:
        await bot.send_message(job.chat_id, text, reply_parameters=reply)
    except TelegramError as exc:
        log.warning("photo_withdrawn_not_sent", job_id=job.id, error=str(exc))


async def run_erasable(services: Services, user_ids: Iterable[int], work: Coroutine) -> int | None:
    """Run `work` as its own task, which /forget of any of `user_ids` cancels wherever it is
    (ActiveJobs) without cancelling the caller; return whose /forget did (None: it ran to
    its end). A cancellation of the caller (the bot stopping) goes on as one: the job is
    recovered at the next start."""
    task = asyncio.create_task(work)
    active = services.active_jobs
    with active.track(user_ids, task):
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current and current.cancelling()):
                raise
            return active.erased_by(task)
    return None


async def _start(
    bot: Bot,
    services: Services,
    job: Job,
    stream: AnswerStream,
    images: tuple[bytes, ...],
    language: str,
    think: bool,
    notice: str | None,
    wait_for_room: bool,
) -> None:
    storage, settings = services.storage, services.settings

    def t(key: str, /, **values: object) -> str:
        return services.texts.get(language, key, **values)

    attempts = await storage.start_job_attempt(job.id)
    if attempts is None:
        log.info("job_erased", job_id=job.id)
        if job.photo_from is not None and await storage.get_job(job.id) is not None:
            await _tell_photo_withdrawn(bot, services, job, language)  # while it waited
        return
    if attempts > MAX_ATTEMPTS:
        log.error("job_given_up", job_id=job.id)
        await storage.set_job_status(job.id, "failed")
        await bot.send_message(job.chat_id, t("error_engine"))
        return
    history = await load_history(
        bot, services, job, attach_latest_image=not images, language=language
    )
    # read now, not when the job was accepted: a job recovered after a restart, and every
    # follow-up, follows the diet as it is
    diet = await storage.get_diet(job.user_id)
    request = Request(
        language=language,
        question=job.question,
        images=images,
        quoted=job.quoted,  # stored with the job: a restart asks with it too
        history=history,
        think=think,
        max_new_tokens=settings.max_new_tokens,
        sampling=Sampling(settings.temperature, settings.top_p, settings.top_k),
        owner=user_ref(job.user_id),
        photo_owners=() if job.photo_from is None else (user_ref(job.photo_from),),
        diet=diet,
    )
    kind = "thinking" if think else "photo" if images else "text"
    status = t(f"placeholder_{kind}")
    if notice:
        status = f"{notice}\n{status}"
    stored = await _answer(services, job, request, stream, status, t, wait_for_room=wait_for_room)
    # /overlay on: the picture follows a single photo's answer; an album keeps its page
    # buttons (docs/overlay.md)
    if stored is not None and len(images) == 1 and await storage.get_overlay(job.user_id):
        turn = await storage.get_photo_turn(stored)
        if turn is not None:
            await draw_on_photo(
                bot, services, stored, turn, 0, language=language, reply_to=job.message_id
            )


async def _answer(
    services: Services,
    job: Job,
    request: Request,
    stream: AnswerStream,
    status: str,
    t,
    *,
    wait_for_room: bool,
) -> StoredMessage | None:
    """The answer stored and delivered (None when it was not)."""
    storage = services.storage
    started = time.monotonic()
    try:
        await storage.set_job_placeholder(job.id, await stream.start(status))
        log.info("request_submitted", job_id=job.id, request_id=request.request_id)
        try:
            finished = await _run(services, request, stream, status, t, wait_for_room)
        except InferenceError as exc:
            services.record_failure(exc.kind)
            log.warning("request_failed", job_id=job.id, kind=exc.kind)
            await storage.set_job_status(job.id, "failed")
            await stream.fail(error_text(services, exc, t))
            return None
        answer = split_answer(finished.text)
        log.info("answer_block", job_id=job.id, status=answer.status, **answer.data.counts())
        # stored as the prose and the block as read: the history shows the model its
        # earlier phrases in the form it is asked for, and a button reads them back
        stored = await storage.complete_job(
            job, answer=answer.stored_text(), thought=finished.thought
        )
        if stored is None:
            log.info("answer_erased", job_id=job.id)
            await stream.discard()
            return None
        prices = await prices_text(services, job.user_id, answer.data.prices, t, request.language)
        messages, keyboard = answer_messages(
            stored.text,
            finished.thought,
            t,
            finished.finish_reason,
            message_id=stored.id,
            extra=prices,
            pages=len(job.image_file_ids),
        )
        await deliver(services, job, stream, messages, keyboard)
    except Forbidden:  # the user blocked the bot: nobody to answer
        log.info("user_blocked_bot", job_id=job.id)
        await storage.set_job_status(job.id, "failed")
        return None
    except Exception:
        log.exception("job_failed", job_id=job.id)
        await _give_up(services, job, stream, t)
        return None
    latency = time.monotonic() - started
    first = stream.first_text_at - started if stream.first_text_at else None
    services.record_answer(
        latency_s=latency, first_token_s=first, num_output_tokens=finished.num_output_tokens
    )
    log.info(
        "answer_delivered",
        job_id=job.id,
        num_tokens=finished.num_output_tokens,
        seconds=round(latency, 2),
    )
    return stored


async def _give_up(services: Services, job: Job, stream: AnswerStream, t) -> None:
    """End a job that failed unexpectedly (a broken engine stream, a full disk, Telegram
    down for good): failed, so it no longer counts against the user's limit, and the user
    told if Telegram lets us. Both best effort: the failure may be the database's own."""
    services.record_failure("bot_error")
    try:
        await services.storage.set_job_status(job.id, "failed")
    except Exception:
        log.exception("job_status_not_saved", job_id=job.id)
    try:
        await stream.fail(t("error_engine"))
    except TelegramError as exc:
        log.warning("failure_not_shown", job_id=job.id, error=type(exc).__name__)


async def deliver(
    services: Services,
    job: Job,
    stream: AnswerStream,
    messages: list[str],
    keyboard: InlineKeyboardMarkup | None = None,
) -> None:
    """Send the answer's messages, retrying Telegram's transient failures with backoff in
    this process. Each message Telegram accepts is recorded at once, the last one together
    with `delivered`, so a restart sends only what was not accepted (at least once)."""
    sent = job.parts_sent

    # in a group a reply to the answer about a photo asks about that photo (bot.addressing)
    links_photo = job.image_file_id is not None and job.chat_type != "private"

    async def part_sent(count: int, message_id: int) -> None:
        nonlocal sent
        sent = count
        await services.storage.set_job_parts_sent(
            job.id,
            count,
            done=count == len(messages),
            answer_message_id=message_id if links_photo else None,
        )

    delay = services.settings.delivery_retry_s
    for attempt in range(1, DELIVERY_ATTEMPTS + 1):
        try:
            await stream.finish(messages, sent=sent, on_sent=part_sent, keyboard=keyboard)
            return
        except RetryAfter as exc:
            wait, error = _seconds(exc.retry_after), exc
        except (BadRequest, Forbidden):
            raise  # the same request would fail again
        except NetworkError as exc:  # timeouts, 5xx, connection errors
            wait, error = delay * 2 ** (attempt - 1), exc
        if attempt == DELIVERY_ATTEMPTS:
            raise error
        log.warning("delivery_retried", job_id=job.id, attempt=attempt, error=type(error).__name__)
        await asyncio.sleep(wait)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def deliver_stored(bot: Bot, services: Services, job: Job, *, language: str) -> None:
    """Send an answer that was stored but maybe not (wholly) delivered before a crash."""

    def t(key: str, /, **values: object) -> str:
        return services.texts.get(language, key, **values)

    stream = AnswerStream(bot, job.chat_id, job.message_id, is_private=False, interval_s=0)
    prices = split_answer(job.answer or "").data.prices
    extra = await prices_text(services, job.user_id, prices, t, language)
    messages, keyboard = answer_messages(
        job.answer or "",
        job.thought or "",
        t,
        "stop",
        message_id=job.answer_history_id,
        extra=extra,
        pages=len(job.image_file_ids),
    )
    work = deliver(services, job, stream, messages, keyboard)
    try:
        if await run_erasable(services, job.owners, work) is not None:
            log.info("answer_erased", job_id=job.id)
            return
    except Exception:
        log.exception("stored_answer_not_delivered", job_id=job.id)
        await services.storage.set_job_status(job.id, "failed")
        return
    log.info("stored_answer_delivered", job_id=job.id)


def queue_line(services: Services, position: int, t) -> str:
    batch = services.settings.max_batch_size
    seconds = services.stats.wait_estimate_s(position, batch)
    if seconds is None:
        return t("queue_position", position=position)
    return t("queue_position_eta", position=position, seconds=seconds)


def error_text(services: Services, error: InferenceError, t) -> str:
    if error.kind == "queue_full":
        waiting = services.worker.queue_depth + 1
        seconds = services.stats.wait_estimate_s(waiting, services.settings.max_batch_size)
        if seconds is not None:
            return t("error_busy_eta", seconds=seconds)
    return t(ERROR_KEYS.get(error.kind, "error_engine"))


def answer_messages(
    answer: str,
    thought: str,
    t,
    finish_reason: str,
    *,
    message_id: int | None,
    extra: str = "",
    pages: int = 0,
) -> tuple[list[str], InlineKeyboardMarkup | None]:
    """The stored answer as the chat shows it: the prose, its phrases written under it, and
    their "Show to staff" buttons (which name `message_id`, the answer's history row); then
    `extra` (Markdown: the prices converted); "Show on the photo" for an answer about
    `pages` photos."""
    split = split_answer(answer)
    phrases = split.data.phrases
    parts = [split.prose, phrases_markdown(phrases, t("say_it")), extra]
    text = "\n\n".join(filter(None, parts))
    messages = render_messages(text, thought=thought)
    if not text:
        messages.append(t("empty_answer"))
    elif finish_reason == "length":
        messages.append(f"<i>{t('answer_cut')}</i>")
    keyboard = phrase_keyboard(message_id, phrases, lambda p: t("show_to_staff", phrase=p))
    rows = [*(keyboard.inline_keyboard if keyboard else ()), *overlay_rows(message_id, pages, t)]
    return messages, InlineKeyboardMarkup(rows) if rows else None


async def prices_text(
    services: Services, user_id: int, prices: tuple[Price, ...], t, language: str
) -> str:
    """The answer's prices in the user's currency (Markdown); without one set, the question
    for it, once."""
    if not prices:
        return ""
    storage = services.storage
    choice = await storage.get_currency(user_id)
    if choice.code is None:
        if choice.asked:
            return ""
        await storage.set_currency_asked(user_id, default_language=language)
        return f"_{escape_markdown(t('currency_ask'))}_"
    needs_reference = any(p.currency not in (choice.code, *choice.own_rates) for p in prices)
    reference = await services.rates.reference() if needs_reference else None
    locale = services.texts.ui_language(language)
    return prices_markdown(prices, choice, reference, t, locale)


async def _run(
    services: Services, request: Request, stream: AnswerStream, status: str, t, wait_for_room: bool
) -> Finished:
    """The answer; with `wait_for_room`, a full queue is waited out instead of refused (for
    jobs recovered after a restart, which were accepted long ago)."""
    while True:
        try:
            return await _stream_answer(services, request, stream, status, t)
        except QueueFull:
            if not wait_for_room:
                raise
            await asyncio.sleep(ROOM_WAIT_S)


async def _stream_answer(
    services: Services, request: Request, stream: AnswerStream, status: str, t
) -> Finished:
    events = services.worker.submit(request)
    prose = BlockSplitter()  # the answer's JSON block never shows while it streams
    try:
        async with asyncio.timeout(services.settings.request_timeout_s):
            async for event in events:
                match event:
                    case Queued(position=position) if position > 1:
                        line = queue_line(services, position, t)
                        await stream.set_status(f"{status}\n{line}")
                    case Started():
                        await stream.set_status(status)
                    case Delta(text=text, is_thought=False):
                        if visible := prose.feed(text):
                            await stream.append(visible)
                    case Finished():
                        return event
    except TimeoutError:
        raise RequestTimedOut(f"no answer within {services.settings.request_timeout_s} s") from None
    finally:
        await events.aclose()  # cancels the request in the engine if it is still running
    raise InferenceError("the worker ended the stream without an answer")


class RequestTimedOut(InferenceError):
    kind = "timeout"


async def load_history(
    bot: Bot, services: Services, job: Job, *, attach_latest_image: bool, language: str
) -> tuple[Turn, ...]:
    """Recent turns of this user in this chat for the prompt; the latest photo (or every
    page of the latest album) is attached again for follow-ups."""
    stored = await services.storage.get_history(
        job.chat_id, job.user_id, max_turns=services.settings.max_history_turns
    )
    latest = next((m for m in reversed(stored) if m.image_file_ids), None)
    reference = services.texts.get(language, "photo_reference")
    turns = []
    for message in stored:
        images: tuple[bytes, ...] = ()
        text = message.text
        if message.image_file_ids:
            if attach_latest_image and message is latest:
                fetched = [await _fetch_image(bot, services, i) for i in message.image_file_ids]
                images = tuple(image for image in fetched if image is not None)
            if not images:
                text = f"{reference} {text}".strip()
        turns.append(Turn(role=message.role, text=text, images=images))
    return tuple(turns)


async def download(bot: Bot, file_id: str) -> bytes:
    file = await bot.get_file(file_id)
    return bytes(await file.download_as_bytearray())


async def prepare_image(services: Services, data: bytes) -> bytes:
    """Validate and normalise a photo off the event loop; raises ImageRejected."""
    settings = services.settings
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    return await services.worker.normalize_image(data, limits)


async def _fetch_image(bot: Bot, services: Services, file_id: str) -> bytes | None:
    try:
        return await prepare_image(services, await download(bot, file_id))
    except (TelegramError, ImageRejected) as exc:
        log.warning("history_image_unavailable", error=str(exc))
        return None
