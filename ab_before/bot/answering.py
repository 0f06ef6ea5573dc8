"""Run one job: ask the model about a photo or a follow-up, stream the answer into the
chat, store it, deliver it. Used by the handlers and by recovery after a restart."""

from __future__ import annotations

import asyncio
import time

import structlog
from telegram import Bot
from telegram.error import Forbidden, TelegramError

from bot.context import Services
from bot.render import render_messages
from bot.storage import Job
from bot.streaming import AnswerStream
from inference import (
    Delta,
    Finished,
    ImageLimits,
    ImageRejected,
    InferenceError,
    Queued,
    Request,
    Sampling,
    Started,
    Turn,
    normalize_image,
)

log = structlog.get_logger()

MAX_ATTEMPTS = 3  # a job that crashed the bot this often is given up
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
    image: bytes | None,
    language: str,
    think: bool,
    notice: str | None = None,
) -> None:
    """One turn: history → request → streamed answer → stored → delivered."""
    storage, settings = services.storage, services.settings

    def t(key: str, /, **values: object) -> str:
        return services.texts.get(language, key, **values)

    async with services.user_locks.hold(job.user_id):
        if await storage.start_job_attempt(job.id) > MAX_ATTEMPTS:
            log.error("job_given_up", job_id=job.id)
            await storage.set_job_status(job.id, "failed")
            await bot.send_message(job.chat_id, t("error_engine"))
            return
        history = await load_history(
            bot, services, job.user_id, attach_latest_image=image is None, language=language
        )
        request = Request(
            language=language,
            question=job.question,
            image=image,
            history=history,
            think=think,
            max_new_tokens=settings.max_new_tokens,
            sampling=Sampling(settings.temperature, settings.top_p, settings.top_k),
        )
        kind = "thinking" if think else "photo" if image else "text"
        status = t(f"placeholder_{kind}")
        if notice:
            status = f"{notice}\n{status}"
        stream = AnswerStream(
            bot,
            job.chat_id,
            job.message_id,
            is_private=job.chat_type == "private",
            interval_s=settings.stream_interval_s,
        )
        try:
            await storage.set_job_placeholder(job.id, await stream.start(status))
            log.info("request_submitted", job_id=job.id, request_id=request.request_id)
            await _answer(services, job, request, stream, status, t)
        except Forbidden:  # the user blocked the bot: nobody to answer
            log.info("user_blocked_bot", job_id=job.id)
            await storage.set_job_status(job.id, "failed")
        finally:
            stream.close()


async def _answer(
    services: Services, job: Job, request: Request, stream: AnswerStream, status: str, t
) -> None:
    storage = services.storage
    started = time.monotonic()
    try:
        finished = await _run(services, request, stream, status, t)
    except InferenceError as exc:
        services.record_failure(exc.kind)
        log.warning("request_failed", job_id=job.id, kind=exc.kind)
        await storage.set_job_status(job.id, "failed")
        await stream.fail(error_text(services, exc, t))
        return
    except BaseException:
        await stream.fail(t("error_engine"))
        raise
    await storage.complete_job(job, answer=finished.text, thought=finished.thought)
    messages = answer_messages(finished.text, finished.thought, t, finished.finish_reason)
    await stream.finish(messages)
    await storage.set_job_status(job.id, "delivered")
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


async def deliver_stored(bot: Bot, services: Services, job: Job, *, language: str) -> None:
    """Send an answer that was stored but maybe not delivered before a crash."""

    def t(key: str, /, **values: object) -> str:
        return services.texts.get(language, key, **values)

    stream = AnswerStream(bot, job.chat_id, job.message_id, is_private=False, interval_s=0)
    await stream.finish(answer_messages(job.answer or "", job.thought or "", t, "stop"))
    await services.storage.set_job_status(job.id, "delivered")
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


def answer_messages(answer: str, thought: str, t, finish_reason: str) -> list[str]:
    messages = render_messages(answer, thought=thought)
    if not answer.strip():
        messages.append(t("empty_answer"))
    elif finish_reason == "length":
        messages.append(f"<i>{t('answer_cut')}</i>")
    return messages


async def _run(
    services: Services, request: Request, stream: AnswerStream, status: str, t
) -> Finished:
    events = services.worker.submit(request)
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
                        await stream.append(text)
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
    bot: Bot, services: Services, user_id: int, *, attach_latest_image: bool, language: str
) -> tuple[Turn, ...]:
    """Recent turns for the prompt; the latest photo is attached again for follow-ups."""
    stored = await services.storage.get_history(
        user_id, max_turns=services.settings.max_history_turns
    )
    latest_image_id = next((m.image_file_id for m in reversed(stored) if m.image_file_id), None)
    turns = []
    for message in stored:
        image = None
        text = message.text
        if message.image_file_id:
            if attach_latest_image and message.image_file_id == latest_image_id:
                image = await _fetch_image(bot, services, message.image_file_id)
            if image is None:
                reference = services.texts.get(language, "photo_reference")
                text = f"{reference} {text}".strip()
        turns.append(Turn(role=message.role, text=text, image=image))
    return tuple(turns)


async def download(bot: Bot, file_id: str) -> bytes:
    file = await bot.get_file(file_id)
    return bytes(await file.download_as_bytearray())


async def prepare_image(services: Services, data: bytes) -> bytes:
    """Validate and normalise a photo off the event loop; raises ImageRejected."""
    settings = services.settings
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    return await asyncio.to_thread(normalize_image, data, limits)


async def _fetch_image(bot: Bot, services: Services, file_id: str) -> bytes | None:
    try:
        return await prepare_image(services, await download(bot, file_id))
    except (TelegramError, ImageRejected) as exc:
        log.warning("history_image_unavailable", error=str(exc))
        return None
