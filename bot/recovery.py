"""After a restart: answer every job that was accepted but not delivered, exactly once."""

from __future__ import annotations

import asyncio

import structlog
from telegram import Bot
from telegram.error import TelegramError

from bot.answering import deliver_stored, download, prepare_image, run_erasable, run_job
from bot.context import Services
from bot.storage import Job
from inference import ImageRejected

log = structlog.get_logger()


async def recover_jobs(bot: Bot, services: Services) -> int:
    """Run (or deliver) the unfinished jobs, oldest first, as many at once as take half the
    queue (new users still find room); return how many there were."""
    jobs = await services.storage.get_unfinished_jobs()
    if jobs:
        log.info("recovering_jobs", count=len(jobs))
    room = asyncio.Semaphore(max(1, services.settings.max_queue // 2))

    async def recover(job: Job) -> None:
        async with room:
            await _recover(bot, services, job)

    # erasable from the start: a job waiting its turn is dropped by /forget too
    waiting = (run_erasable(services, job.owners, recover(job)) for job in jobs)
    results = await asyncio.gather(*waiting, return_exceptions=True)
    for job, result in zip(jobs, results, strict=True):
        if isinstance(result, BaseException):
            log.error("job_recovery_failed", job_id=job.id, exc_info=result)
    return len(jobs)


async def _recover(bot: Bot, services: Services, job: Job) -> None:
    if job.placeholder_id is not None:  # the stopped process's "Reading your photo…"
        try:
            await bot.delete_message(job.chat_id, job.placeholder_id)
        except TelegramError as exc:
            log.warning("stale_placeholder_kept", job_id=job.id, error=str(exc))
    user = await services.storage.get_user(job.user_id)
    language = user.language if user else services.settings.default_language
    if job.status == "answered":
        await deliver_stored(bot, services, job, language=language)
        return
    images = []
    for file_id in job.image_file_ids:  # one photo, or an album's pages
        try:
            images.append(await prepare_image(services, await download(bot, file_id)))
        except (TelegramError, ImageRejected) as exc:
            log.warning("recovery_image_unavailable", job_id=job.id, error=str(exc))
    if job.image_file_ids and not images:
        await services.storage.set_job_status(job.id, "failed")
        await bot.send_message(job.chat_id, services.texts.get(language, "image_download_failed"))
        return
    notice = services.texts.get(language, "answer_delayed")
    await run_job(
        bot,
        services,
        job,
        images=tuple(images),
        language=language,
        think=bool(user and user.think),
        notice=notice,
        wait_for_room=True,
    )
