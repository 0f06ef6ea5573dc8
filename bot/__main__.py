"""`python -m bot`: settings → logging → the checks that take seconds (model files, database,
the token with Telegram) → the model load (minutes) → Telegram polling or webhook."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sqlite3
import sys
import tempfile
from pathlib import Path

import structlog
from telegram import Bot
from telegram.error import InvalidToken, NetworkError
from telegram.request import HTTPXRequest

from bot.app import running
from bot.context import Services
from bot.fonts import FontSet, FontsMissing
from bot.i18n import Texts
from bot.logging import configure_logging, install_pseudonym_key
from bot.settings import Settings, StartupError, load_settings
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

# How long getMe may take before the start gives up: Telegram answers it in well under one.
TELEGRAM_CHECK_TIMEOUT_S = 10.0


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
        raise StartupError(
            "no_openai_base_urls",
            "TRAVELBOT_ENGINE=openai needs TRAVELBOT_OPENAI_BASE_URLS, "
            "e.g. http://vllm-0:8000/v1,http://vllm-1:8000/v1",
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


def find_fonts(settings: Settings) -> FontSet:
    """The phrase pictures' fonts; a missing one stops the start, named."""
    try:
        return FontSet.find(settings.fonts_dir)
    except FontsMissing as exc:
        raise StartupError("fonts_missing", str(exc)) from None


async def serve(settings: Settings) -> None:
    # Everything that can fail in a second fails before the model loads, which takes minutes
    worker = create_worker(settings)  # the model's files are there
    fonts = find_fonts(settings)
    storage = await open_storage(settings)
    try:
        await check_telegram(settings)
        await worker.start()
        services = Services(
            settings,
            storage,
            worker,
            Texts.load(settings.locales_dir),
            UserLocks(),
            font_set=fonts,
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


async def open_storage(settings: Settings) -> Storage:
    """The database opened and migrated, and the log pseudonym key beside it; a folder the
    bot cannot write (read-only, full, a file) is a StartupError naming it."""
    path = Path(settings.database_path)
    try:
        _check_writable(path.parent)
        key = settings.log_pseudonym_key
        install_pseudonym_key(
            key.get_secret_value() if key else None, settings.log_pseudonym_key_file
        )
        return await Storage.open(path, max_stored_messages=settings.max_stored_messages)
    except OSError as exc:
        raise StartupError("database_unusable", _unwritable(path, exc)) from None
    except sqlite3.Error as exc:
        raise StartupError(
            "database_unusable",
            f"SQLite cannot use the database {path} ({exc}): check that it is a travelbot "
            f"database and that {path.parent} is writable and not full, or set "
            "TRAVELBOT_DATABASE_PATH to another file",
        ) from None


def _check_writable(folder: Path) -> None:
    """Write and sync a page in `folder` (made if missing): the one check that works for
    root too, whom file modes do not stop, and that finds a full disk."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True)
    with tempfile.TemporaryFile(dir=folder) as probe:  # unnamed: nothing is left behind
        probe.write(bytes(4096))
        probe.flush()
        os.fsync(probe.fileno())


def _unwritable(path: Path, exc: OSError) -> str:
    """What stops the bot writing the database at `path`, and what to do."""
    folder = path.parent
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem, fix = f"the disk of {folder} is full", "free space there"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        problem, fix = f"{folder} or a folder above it is a file", "move that file away"
    else:  # EACCES, EPERM, EROFS (a read-only mount) ...
        problem = f"{folder} cannot be created or written ({exc.strerror or exc})"
        fix = f"make it writable for uid {os.getuid()}"
    return (
        f"Cannot write the database {path}: {problem}. To fix, {fix}, or set "
        "TRAVELBOT_DATABASE_PATH to a file in a writable folder"
    )


async def check_telegram(settings: Settings) -> None:
    """getMe with the token: a rejected token (InvalidToken) or an unreachable Bot API
    (NetworkError) ends the start in seconds, not after the model has loaded."""
    token = settings.require_token()
    timeout = TELEGRAM_CHECK_TIMEOUT_S
    request = HTTPXRequest(
        connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout, pool_timeout=timeout
    )
    async with Bot(token, base_url=settings.telegram_base_url, request=request) as bot:
        log.info("telegram_reached", username=bot.username)


def main(settings: Settings | None = None) -> None:
    # Every file the bot makes (the database, its -wal and -shm, the pseudonym key) and every
    # folder is its user's alone, however it is started: Docker images set no umask.
    os.umask(0o077)
    settings = settings or load_settings()
    configure_logging(
        log_format=settings.log_format, level=settings.log_level, secrets=settings.secret_values()
    )
    try:
        settings.require_token()  # before anything is made or loaded
        asyncio.run(serve(settings))
    except StartupError as exc:
        _fail(exc.reason, str(exc))
    except ModelNotFound as exc:
        _fail("model_not_found", str(exc))
    except InvalidToken:  # its message holds the token
        _fail(
            "token_rejected",
            "Telegram rejected the token in TRAVELBOT_TELEGRAM_TOKEN: copy it again from "
            f"@BotFather (/mybots, API Token). Bot API: {settings.telegram_base_url}",
        )
    except NetworkError as exc:  # e.g. no route, DNS, a firewall, a Bot API that is down
        _fail(
            "telegram_unreachable",
            f"Cannot reach Telegram's Bot API at {settings.telegram_base_url} ({exc}): check "
            "the network (proxy, firewall, DNS) and TRAVELBOT_TELEGRAM_BASE_URL",
        )
    except Exception:  # a bug: its traceback, through the logs, which scrub secrets
        log.exception("bot_failed", reason="unexpected")
        sys.exit(1)


def _fail(reason: str, message: str) -> None:
    """A start-up failure as one event: what happened and what to do, no traceback."""
    log.error("bot_failed", reason=reason, error=message)
    sys.exit(1)


if __name__ == "__main__":
    main()
