"""One structlog configuration: pretty on a terminal, JSON in production.

The bot token is scrubbed from every event, ours and the libraries'."""

from __future__ import annotations

import hashlib
import logging
import sys

import structlog

_secrets: list[str] = []


def user_ref(user_id: int) -> str:
    """A stable pseudonym for a Telegram user id, for logs."""
    return hashlib.sha256(f"travelbot:{user_id}".encode()).hexdigest()[:12]


def _scrub(value):
    if isinstance(value, str):
        for secret in _secrets:
            value = value.replace(secret, "***")
    return value


def scrub_secrets(_logger, _method, event_dict: dict) -> dict:
    return {key: _scrub(value) for key, value in event_dict.items()}


def configure_logging(
    *, log_format: str = "auto", level: str = "INFO", secrets: tuple[str, ...] = ()
) -> None:
    _secrets[:] = [secret for secret in secrets if secret]
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL, and Bot API URLs contain the token.
    for noisy in ("httpx", "httpcore", "telegram.ext.ExtBot"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
