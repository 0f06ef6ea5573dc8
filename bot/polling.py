"""getUpdates for polling, with the updates this python-telegram-bot cannot parse dropped.

PTB parses a getUpdates batch as a whole and moves its offset only past a batch that
parsed, so one update it cannot read (a field from a newer Bot API, a malformed one) would
be fetched again forever and nobody would be answered. Such an update is logged by its id
and handed on empty: its offset is confirmed and no handler matches it. (The webhook answers
one with a 400, see bot.webhook: Telegram stops resending it.)
"""

from __future__ import annotations

import structlog
from telegram import Update
from telegram.request import HTTPXRequest

log = structlog.get_logger()


class PollingRequest(HTTPXRequest):
    """PTB's HTTPXRequest for getUpdates (one connection, as PTB makes it), that drops what
    does not parse."""

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1)

    async def post(self, url: str, *args, **kwargs):
        result = await super().post(url, *args, **kwargs)
        if url.endswith("/getUpdates") and isinstance(result, list):
            return [readable for update in result if (readable := only_readable(update))]
        return result


def only_readable(update: object) -> dict | None:
    """`update`, or only its id where PTB cannot parse it (None without one)."""
    try:
        Update.de_json(update, None)
    except Exception as exc:  # whatever the update holds, one of them must not stop polling
        update_id = update.get("update_id") if isinstance(update, dict) else None
        log.warning("update_unreadable", update_id=update_id, error=type(exc).__name__)
        return {"update_id": update_id} if isinstance(update_id, int) else None
    return update
