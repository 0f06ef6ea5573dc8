"""Ask the model about a photo or a follow-up and stream the answer into the chat."""

from __future__ import annotations

import asyncio

import structlog
from telegram import Message
from telegram.error import TelegramError

from bot.context import BotContext
from bot.render import render_messages
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

ERROR_KEYS = {
    "queue_full": "error_busy",
    "worker_stopped": "error_stopping",
    "engine_error": "error_engine",
}


async def answer(
    message: Message,
    context: BotContext,
    *,
    question: str | None,
    image: bytes | None = None,
    image_file_id: str | None = None,
) -> None:
    """One turn: build the request, stream the answer, store both sides of the turn."""
    user_id = message.from_user.id
    think = bool(context.profile and context.profile.think)
    async with context.services.user_locks.hold(user_id):
        await context.storage.get_or_create_user(user_id, default_language=context.language)
        history = await load_history(context, user_id, attach_latest_image=image is None)
        settings = context.settings
        request = Request(
            language=context.language,
            question=question,
            image=image,
            history=history,
            think=think,
            max_new_tokens=settings.max_new_tokens,
            sampling=Sampling(settings.temperature, settings.top_p, settings.top_k),
        )
        status = context.t(
            "placeholder_thinking"
            if think
            else "placeholder_photo"
            if image
            else "placeholder_text"
        )
        stream = AnswerStream(context.bot, message, interval_s=settings.stream_interval_s)
        await stream.start(status)
        log.info("request_submitted", request_id=request.request_id, has_image=image is not None)
        try:
            finished = await _run(context, request, stream, status)
        except InferenceError as exc:
            log.warning("request_failed", request_id=request.request_id, kind=exc.kind)
            await stream.fail(context.t(ERROR_KEYS.get(exc.kind, "error_engine")))
            return
        except BaseException:
            await stream.fail(context.t("error_engine"))
            raise
        messages = render_messages(finished.text, thought=finished.thought)
        if not finished.text.strip():
            messages.append(context.t("empty_answer"))
        elif finished.finish_reason == "length":
            messages.append(f"<i>{context.t('answer_cut')}</i>")
        await context.storage.add_message(
            user_id, "user", question or "", image_file_id=image_file_id
        )
        await context.storage.add_message(user_id, "model", finished.text)
        await stream.finish(messages)
        log.info("answer_sent", request_id=request.request_id, num_messages=len(messages))


async def _run(
    context: BotContext, request: Request, stream: AnswerStream, status: str
) -> Finished:
    async for event in context.worker.submit(request):
        match event:
            case Queued(position=position) if position > 1:
                await stream.set_status(
                    f"{status}\n{context.t('queue_position', position=position)}"
                )
            case Started():
                await stream.set_status(status)
            case Delta(text=text, is_thought=False):
                await stream.append(text)
            case Finished():
                return event
    raise InferenceError("the worker ended the stream without an answer")


async def load_history(
    context: BotContext, user_id: int, *, attach_latest_image: bool
) -> tuple[Turn, ...]:
    """Recent turns for the prompt; the latest photo is attached again for follow-ups."""
    stored = await context.storage.get_history(
        user_id, max_turns=context.settings.max_history_turns
    )
    latest_image_id = next((m.image_file_id for m in reversed(stored) if m.image_file_id), None)
    turns = []
    for message in stored:
        image = None
        text = message.text
        if message.image_file_id:
            if attach_latest_image and message.image_file_id == latest_image_id:
                image = await _fetch_image(context, message.image_file_id)
            if image is None:
                text = f"{context.t('photo_reference')} {text}".strip()
        turns.append(Turn(role=message.role, text=text, image=image))
    return tuple(turns)


async def download(context: BotContext, file_id: str) -> bytes:
    file = await context.bot.get_file(file_id)
    return bytes(await file.download_as_bytearray())


async def prepare_image(context: BotContext, data: bytes) -> bytes:
    """Validate and normalise a photo off the event loop; raises ImageRejected."""
    limits = ImageLimits(
        max_bytes=context.settings.max_image_bytes, max_pixels=context.settings.max_image_pixels
    )
    return await asyncio.to_thread(normalize_image, data, limits)


async def _fetch_image(context: BotContext, file_id: str) -> bytes | None:
    try:
        return await prepare_image(context, await download(context, file_id))
    except (TelegramError, ImageRejected) as exc:
        log.warning("history_image_unavailable", error=str(exc))
        return None
