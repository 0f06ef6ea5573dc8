"""Health and metrics over HTTP on their own port (settings http_listen, http_port).

/healthz  liveness: the event loop runs and the database's last write did not fail (a
          process that cannot store anything is restarted); 503 with the problem
/readyz   readiness: model loaded and worker thread alive, updates arriving (polling or
          webhook), database readable and its last write working; 503 with the problems.
          Neither writes: a probe must never hold the database's write lock
/metrics  Prometheus text format (bot/metrics.py)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import structlog
from aiohttp import web

from bot.context import Services
from bot.metrics import CONTENT_TYPE

log = structlog.get_logger()

DATABASE_TIMEOUT_S = 5.0


class UpdateSource(Protocol):
    """What receives the updates: PTB's Updater polling, or bot.webhook's receiver."""

    @property
    def running(self) -> bool: ...


async def find_problems(services: Services, updates: UpdateSource) -> list[str]:
    """What keeps the bot from answering; empty when it is ready."""
    problems = []
    if not services.worker.is_alive:
        problems.append("worker: not running")
    if not updates.running:
        problems.append("telegram: not receiving updates")
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_S):
            await services.storage.check_readable()
    except Exception as exc:
        problems.append(f"database: {type(exc).__name__}: {exc}")
    if services.storage.write_error:
        problems.append(f"database: last write failed: {services.storage.write_error}")
    return problems


def health_app(services: Services, updates: UpdateSource) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        if services.storage.write_error:
            problem = f"database: last write failed: {services.storage.write_error}"
            return web.json_response({"alive": False, "problems": [problem]}, status=503)
        return web.json_response({"alive": True})

    async def readyz(_request: web.Request) -> web.Response:
        problems = await find_problems(services, updates)
        if problems:
            log.warning("not_ready", problems=problems)
            return web.json_response({"ready": False, "problems": problems}, status=503)
        return web.json_response({"ready": True})

    async def metrics(_request: web.Request) -> web.Response:
        body = services.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serving_health(services: Services, updates: UpdateSource) -> AsyncIterator[None]:
    """The health and metrics server while the block runs; nothing when http_port is 0."""
    settings = services.settings
    if not settings.http_port:
        yield
        return
    runner = web.AppRunner(health_app(services, updates), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.http_listen, settings.http_port).start()
        log.info("http_started", listen=settings.http_listen, port=settings.http_port)
        yield
    finally:
        await runner.cleanup()
