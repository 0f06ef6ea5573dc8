"""`python -m bot`: settings → logging → storage → worker → Telegram polling."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from bot.app import running
from bot.context import Services
from bot.i18n import Texts
from bot.logging import configure_logging
from bot.settings import Settings
from bot.storage import Storage
from bot.user_locks import UserLocks
from inference import EngineConfig, GemmaEngine, ModelNotFound, Worker, check_model_dir

log = structlog.get_logger()


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        model_path=check_model_dir(settings.model_path),
        device=settings.device,
        dtype=settings.dtype,
        image_soft_tokens=settings.image_soft_tokens,
        experts_implementation=settings.experts_implementation,
    )


async def serve(settings: Settings) -> None:
    config = engine_config(settings)
    storage = await Storage.open(
        settings.database_path, max_stored_messages=settings.max_stored_messages
    )
    worker = Worker(lambda: GemmaEngine(config), max_queue=settings.max_queue)
    try:
        await worker.start()
        services = Services(
            settings, storage, worker, Texts.load(settings.locales_dir), UserLocks()
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with running(services):
            await stop.wait()
            log.info("stopping")
    finally:
        await worker.stop()
        await storage.close()


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    token = settings.require_token()
    configure_logging(log_format=settings.log_format, level=settings.log_level, secrets=(token,))
    try:
        asyncio.run(serve(settings))
    except ModelNotFound as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
