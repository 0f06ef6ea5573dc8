"""Wiring: the PTB Application with every handler, and running it with its services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import structlog
from telegram import BotCommand, Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    Updater,
    filters,
)

from bot.albums import resume_albums
from bot.context import SERVICES_KEY, BotContext, Services
from bot.handlers import callbacks, commands, currency, diet, messages, updates
from bot.health import serving_health
from bot.polling import PollingRequest
from bot.rate_limiter import SendRateLimiter
from bot.recovery import recover_jobs
from bot.webhook import WebhookReceiver

log = structlog.get_logger()

COMMANDS = ("start", "help", "lang", "think", "diet", "currency", "overlay", "mydata", "forget")


def build_application(services: Services) -> Application:
    settings = services.settings
    application = (
        Application.builder()
        .token(settings.require_token())
        .base_url(settings.telegram_base_url)
        .base_file_url(settings.telegram_base_file_url)
        .context_types(ContextTypes(context=BotContext))
        .concurrent_updates(settings.max_concurrent_updates)
        .get_updates_request(PollingRequest())
        .rate_limiter(
            SendRateLimiter(
                overall_max_rate=settings.telegram_messages_per_second,
                group_max_rate=settings.telegram_messages_per_minute_per_group,
                max_retries=settings.telegram_max_retries,
            )
        )
        .build()
    )
    application.bot_data[SERVICES_KEY] = services
    application.add_handler(TypeHandler(Update, updates.load_profile), group=-1)
    application.add_handler(CommandHandler("start", commands.start))
    application.add_handler(CommandHandler("help", commands.help_command))
    application.add_handler(CommandHandler(["lang", "language"], commands.lang))
    application.add_handler(CommandHandler("think", commands.think))
    application.add_handler(CommandHandler("overlay", commands.overlay))
    application.add_handler(CommandHandler(["diet", "allergies"], diet.diet))
    application.add_handler(CommandHandler("currency", currency.currency))
    application.add_handler(CommandHandler(["mydata", "privacy"], commands.mydata))
    application.add_handler(CommandHandler(["forget", "erase"], commands.forget))
    application.add_handler(CommandHandler("stats", commands.stats))
    application.add_handler(MessageHandler(filters.COMMAND, commands.unknown_command))
    application.add_handler(CallbackQueryHandler(callbacks.button))
    application.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, messages.photo))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, messages.follow_up))
    application.add_handler(MessageHandler(filters.ALL, messages.unsupported))
    application.add_error_handler(updates.on_error)
    return application


async def publish_commands(application: Application, services: Services) -> None:
    """The command menu, in every language the bot speaks."""
    texts = services.texts
    for language in texts.languages:
        menu = [BotCommand(name, texts.get(language, f"cmd_{name}")) for name in COMMANDS]
        code = None if language == "en" else language
        await application.bot.set_my_commands(menu, language_code=code)


RETENTION_INTERVAL_S = 3600


async def enforce_retention(services: Services) -> None:
    """Delete what is older than the retention period, at start and then hourly."""
    while True:
        deleted = await services.storage.delete_older_than(services.settings.retention_days)
        if deleted:
            log.info("retention_deleted", rows=deleted)
        await asyncio.sleep(RETENTION_INTERVAL_S)


async def receive_updates(
    application: Application, services: Services
) -> Updater | WebhookReceiver:
    """Start polling, or the webhook receiver when webhook_url is set; returns what receives
    the updates (stop it at the end)."""
    settings = services.settings
    if not settings.webhook_url:
        await application.updater.start_polling(
            allowed_updates=Update.ALL_TYPES, poll_interval=0.0, timeout=10
        )
        return application.updater
    # Our own receiver, not PTB's start_webhook: it bounds the body it reads (bot/webhook.py).
    # Telegram sends the secret in X-Telegram-Bot-Api-Secret-Token; without it the answer is 403.
    secret = settings.webhook_secret_token.get_secret_value()
    receiver = WebhookReceiver(
        application,
        listen=settings.webhook_listen,
        port=settings.webhook_port,
        path="/" + urlsplit(settings.webhook_url).path.strip("/"),
        secret_token=secret,
    )
    await receiver.start()  # listening before Telegram is told where to send
    await application.bot.set_webhook(
        settings.webhook_url, allowed_updates=Update.ALL_TYPES, secret_token=secret
    )
    return receiver


@contextlib.asynccontextmanager
async def running(services: Services) -> AsyncIterator[Application]:
    """The bot receiving updates (polling or webhook) until the block exits; then a clean
    stop. The health and metrics server runs alongside when http_port is set."""
    application = build_application(services)
    async with application:
        await publish_commands(application, services)
        await application.start()
        updates = await receive_updates(application, services)
        mode = "webhook" if services.settings.webhook_url else "polling"
        log.info("bot_started", username=application.bot.username, mode=mode)
        application.create_task(recover_jobs(application.bot, services), name="recover_jobs")
        application.create_task(resume_albums(application.bot, services), name="resume_albums")
        retention = asyncio.create_task(enforce_retention(services), name="retention")
        try:
            async with serving_health(services, updates):
                yield application
        finally:
            retention.cancel()
            await updates.stop()
            await services.albums.stop()
            await application.stop()
    log.info("bot_stopped")
