"""Receive Telegram's webhook POSTs with a small aiohttp server that feeds the Application's
update queue.

It replaces PTB's tornado server (`Updater.start_webhook`), which reads a body of up to
100 MB before it checks the secret, answers 500 to a body that is not JSON and logs one
that is not an update whole at CRITICAL; none of that can be set from outside.

A request is judged on its headers first: without Telegram's secret it is a 403, and one
declaring more than MAX_BODY_BYTES a 413, before any of the body is read (aiohttp reads what
is left and drops it, so memory does not grow). At most MAX_BODY_BYTES are then read, of a
chunked body too (`client_max_size`, 413 past it); a body that is not JSON or not an update
is a 400, logged by its size only.
"""

from __future__ import annotations

import hmac
import json

import structlog
from aiohttp import web
from telegram import Update
from telegram.ext import Application

log = structlog.get_logger()

MAX_BODY_BYTES = 1024 * 1024  # an update is JSON of a few KB: photos are fetched, not posted
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookReceiver:
    """Telegram's updates POSTed to `path` on listen:port, put on the Application's queue."""

    def __init__(
        self, application: Application, *, listen: str, port: int, path: str, secret_token: str
    ) -> None:
        self._application = application
        self._secret = secret_token.encode()
        self._listen = listen
        self._port = port
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(path, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        self.running = False

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._listen, self._port).start()
        self.running = True

    async def stop(self) -> None:
        self.running = False
        await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        secret = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(secret, self._secret):  # in constant time: no timing hints
            log.debug("webhook_refused", reason="secret")
            return web.Response(status=403)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            log.warning("webhook_refused", reason="too_large", size=request.content_length)
            return web.Response(status=413)
        body = await request.read()  # raises HTTPRequestEntityTooLarge (413) past the limit
        try:
            update = Update.de_json(json.loads(body), self._application.bot)
        except Exception as exc:  # whatever the body is, it is not an update
            log.warning("webhook_bad_update", size=len(body), error=type(exc).__name__)
            return web.Response(status=400)
        # as PTB's own receivers do, for bots with arbitrary callback data
        self._application.bot.insert_callback_data(update)
        await self._application.update_queue.put(update)
        return web.Response()
