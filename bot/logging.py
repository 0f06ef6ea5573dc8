"""One structlog configuration: pretty on a terminal, JSON in production.

Every secret setting is scrubbed from every event, ours and the libraries'. Users appear
only as keyed pseudonyms (user_ref), and no library logs below INFO: their DEBUG records
hold whole updates, request payloads and SQL parameters, i.e. user text and raw ids."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys
from pathlib import Path

import structlog

_secrets: list[str] = []
OWN_LOGGERS = ("bot", "inference")  # the only ones TRAVELBOT_LOG_LEVEL=DEBUG reaches

# Until install_pseudonym_key runs (tests build the app without main): a key of this process
# alone. Never no key: a plain hash of an id is reversed by hashing all ~10^10 possible ids.
_pseudonym_key = secrets.token_bytes(32)


def user_ref(user_id: int) -> str:
    """A pseudonym for a Telegram user id, for logs: stable while the key is, and which id
    it stands for cannot be found without the key."""
    return hmac.new(_pseudonym_key, str(user_id).encode(), hashlib.sha256).hexdigest()[:12]


def install_pseudonym_key(key: str | None, key_file: Path) -> None:
    """Pseudonyms from `key`; None: from a random key kept in `key_file` (made on the first
    start), so that one user's pseudonym stays the same across restarts."""
    global _pseudonym_key
    _pseudonym_key = key.encode() if key else _stored_key(key_file)


def _stored_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: a key already there is never overwritten
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = bytes.fromhex(path.read_text())
        if len(key) < 16:
            raise ValueError(f"{path} holds no key; delete it to have a new one made") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as file:
        file.write(key.hex() + "\n")
    return key


def _scrub(value):
    if isinstance(value, str):
        for secret in _secrets:
            value = value.replace(secret, "***")
    return value


def drop_update_payloads(record: logging.LogRecord) -> bool:
    """python-telegram-bot logs the raw updates it cannot read ("Received data was %r") at
    ERROR and CRITICAL: other users' captions, ids and file ids. Keep the event, not them."""
    if record.name.startswith("telegram") and "Received data was" in str(record.msg):
        record.msg = str(record.msg).split("Received data was")[0] + "(the data is not logged)"
        record.args = ()
    return True


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
    handler.addFilter(drop_update_payloads)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries (aiosqlite, python-telegram-bot, tornado ...) at INFO or above whatever the
    # level: their DEBUG records print captions, raw user ids and file ids.
    level_number = logging.getLevelNamesMapping()[level.upper()]
    root.setLevel(max(level_number, logging.INFO))
    for own in OWN_LOGGERS:
        logging.getLogger(own).setLevel(level_number)
    # httpx logs every request URL, and Bot API URLs contain the token and file paths.
    for noisy in ("httpx", "httpcore", "telegram.ext.ExtBot"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
