"""`python -m bot`: settings → logging → storage → worker → Telegram polling or webhook."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog
from telegram.error import InvalidToken

from bot.app import running
from bot.context import Services
from bot.i18n import Texts
from bot.logging import configure_logging, install_pseudonym_key
from bot.settings import Settings, load_settings
from bot.storage import Storage
from bot.user_locks import UserLocks
from inference import (
    EngineConfig,
    InferenceService,
    ModelNotFound,
    RemoteConfig,
    RemoteWorker,
    RuntimeConfig,
    Worker,
    check_model_dir,
    create_engine,
)

log = structlog.get_logger()


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        model_path=check_model_dir(settings.model_path),
        device=settings.device,
        dtype=settings.dtype,
        image_soft_tokens=settings.image_soft_tokens,
        experts_implementation=settings.experts_implementation,
    )


def runtime_config(settings: Settings) -> RuntimeConfig | None:
    """The batching engine's settings; None selects plain generate()."""
    if settings.engine != "batch":
        return None
    return RuntimeConfig(
        max_slots=settings.max_batch_size,
        max_seq_len=settings.max_seq_len,
        kv_cache_bytes=None if not settings.kv_cache_gib else int(settings.kv_cache_gib * 2**30),
        cuda_graphs=settings.cuda_graphs,
        compile_layers=settings.compile_layers,
        prefix_cache_tokens=settings.prefix_cache_tokens,
        photo_cache_bytes=settings.photo_cache_mib * 2**20,
        fp8_experts=settings.fp8_experts,
        fp8_kv_cache=settings.fp8_kv_cache,
    )


def remote_config(settings: Settings) -> RemoteConfig:
    """The OpenAI-compatible servers the "openai" engine sends requests to."""
    if not settings.openai_base_urls:
        raise SystemExit(
            "TRAVELBOT_ENGINE=openai needs TRAVELBOT_OPENAI_BASE_URLS, "
            "e.g. '[\"http://vllm-0:8000/v1\"]'"
        )
    api_key = settings.openai_api_key
    return RemoteConfig(
        base_urls=tuple(settings.openai_base_urls),
        model=settings.openai_model,
        api_key=api_key.get_secret_value() if api_key else None,
        max_concurrency_per_endpoint=settings.openai_max_concurrency_per_endpoint,
        max_queue=settings.max_queue,
        connect_timeout_s=settings.openai_connect_timeout_s,
        read_timeout_s=settings.openai_read_timeout_s,
    )


def create_worker(settings: Settings) -> InferenceService:
    """The worker with the engine the settings choose (the model loads in worker.start())."""
    if settings.engine == "openai":
        return RemoteWorker(remote_config(settings))
    config, runtime = engine_config(settings), runtime_config(settings)
    return Worker(lambda: create_engine(config, runtime), max_queue=settings.max_queue)


async def serve(settings: Settings) -> None:
    worker = create_worker(settings)
    storage = await Storage.open(
        settings.database_path, max_stored_messages=settings.max_stored_messages
    )
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
    # Every file the bot makes (the database, its -wal and -shm, the pseudonym key) and every
    # folder is its user's alone, however it is started: Docker images set no umask.
    os.umask(0o077)
    settings = settings or load_settings()
    settings.require_token()
    configure_logging(
        log_format=settings.log_format, level=settings.log_level, secrets=settings.secret_values()
    )
    try:
        key = settings.log_pseudonym_key
        install_pseudonym_key(
            key.get_secret_value() if key else None, settings.log_pseudonym_key_file
        )
        asyncio.run(serve(settings))
    except ModelNotFound as exc:
        sys.exit(str(exc))
    except InvalidToken:  # its message holds the token
        sys.exit(
            "Telegram rejected the token in TRAVELBOT_TELEGRAM_TOKEN: copy it again from "
            "@BotFather (/mybots, API Token)."
        )
    except Exception:  # through the logs, which scrub secrets, rather than a raw traceback
        log.exception("bot_failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
