"""/healthz, /readyz and /metrics on the bot's HTTP port, read with a real HTTP client."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest

from bot.settings import ROOT
from tests.conftest import FREE_PORT, RunningBot, small_photo
from tests.e2e.botapi_server import TgUser


def url(bot: RunningBot, path: str) -> str:
    return f"http://127.0.0.1:{bot.services.settings.http_port}{path}"


async def get(bot: RunningBot, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url(bot, path)) as response:
        return response.status, await response.text()


def sample(metrics: str, name: str) -> float:
    """The value of one unlabelled sample in Prometheus text format."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name} not in\n{metrics}"
    return float(match.group(1))


async def metrics_when(http_get, predicate: Callable[[str], bool], *, timeout: float = 10.0) -> str:
    """/metrics once `predicate` holds: an answer is counted just after its last message."""
    deadline = time.monotonic() + timeout
    while True:
        _, metrics = await http_get("/metrics")
        if predicate(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.05)


@pytest.mark.settings(http_port=FREE_PORT)
async def test_alive_and_ready(bot: RunningBot) -> None:
    assert await get(bot, "/healthz") == (200, '{"alive": true}')
    assert await get(bot, "/readyz") == (200, '{"ready": true}')
    assert await get(bot, "/nothing") == (404, "404: Not Found")


@pytest.mark.settings(http_port=FREE_PORT)
async def test_not_ready_when_the_worker_stopped(bot: RunningBot) -> None:
    await bot.services.worker.stop()
    status, body = await get(bot, "/readyz")
    assert status == 503 and "worker: not running" in body
    assert await get(bot, "/healthz") == (200, '{"alive": true}')  # alive, but not ready


@pytest.mark.settings(http_port=FREE_PORT)
async def test_not_ready_when_the_database_cannot_be_read(bot: RunningBot) -> None:
    await bot.storage.close()
    status, body = await get(bot, "/readyz")
    assert status == 503 and "database:" in body and "worker" not in body


async def lock_database(bot: RunningBot, mode: str) -> sqlite3.Connection:
    """Another connection holding the database's write lock; taken off the event loop,
    where the bot's own writes finish meanwhile."""
    settings = bot.services.settings
    # the retention sweep the bot starts with (a write) done first: begun after the lock
    # was taken, it would wait out the busy timeout, and every query behind it too
    await bot.services.storage.delete_older_than(settings.retention_days)
    other = sqlite3.connect(settings.database_path, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(other.execute, f"BEGIN {mode}")
    return other


@pytest.mark.settings(http_port=FREE_PORT)
async def test_probes_never_wait_for_the_write_lock(bot: RunningBot) -> None:
    other = await lock_database(bot, "IMMEDIATE")  # a long write elsewhere (a backup tool)
    try:
        started = time.monotonic()
        assert await get(bot, "/readyz") == (200, '{"ready": true}')
        assert await get(bot, "/healthz") == (200, '{"alive": true}')
        assert time.monotonic() - started < 1  # a writing probe waited for the busy timeout
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.settings(http_port=FREE_PORT)
async def test_not_alive_while_the_database_cannot_be_written(bot: RunningBot) -> None:
    server, t = bot.server, bot.services.texts
    ann = TgUser(id=6301, language_code="en")
    other = await lock_database(bot, "EXCLUSIVE")
    mark = server.mark()
    server.send_text(ann, "/lang de")  # waits out the busy timeout, then fails
    failed = await server.wait_for(lambda c: c.method == "sendMessage", after=mark, timeout=20)
    assert failed.params["text"] == t.get("en", "error_generic")
    status, body = await get(bot, "/healthz")
    assert status == 503 and "database is locked" in body
    assert (await get(bot, "/readyz"))[0] == 503
    other.execute("ROLLBACK")
    other.close()
    mark = server.mark()
    server.send_text(ann, "/lang de")
    await server.wait_for(lambda c: c.method == "sendMessage", after=mark)
    assert await get(bot, "/healthz") == (200, '{"alive": true}')


@pytest.mark.settings(http_port=FREE_PORT)
async def test_metrics_count_an_answered_photo(bot: RunningBot) -> None:
    status, before = await get(bot, "/metrics")
    assert status == 200
    for name in ("travelbot_queue_depth", "travelbot_requests_running", "travelbot_worker_alive"):
        assert f"# TYPE {name} gauge" in before
    assert "# TYPE travelbot_answer_seconds histogram" in before
    assert "# TYPE travelbot_first_token_seconds histogram" in before
    assert "# TYPE travelbot_errors_total counter" in before
    assert sample(before, "travelbot_answer_seconds_count") == 0
    assert sample(before, "travelbot_worker_alive") == 1
    assert "_created" not in before
    assert "travelbot_gpu_memory_bytes" not in before  # the tiny model runs on the CPU

    server = bot.server
    mark = server.mark()
    server.send_photo(TgUser(id=9601), small_photo("SORTIE"))
    await server.wait_for(lambda c: c.method == "deleteMessage", after=mark, timeout=60)
    after = await metrics_when(
        lambda path: get(bot, path), lambda m: sample(m, "travelbot_answers_total") == 1
    )
    assert sample(after, "travelbot_answer_seconds_count") == 1
    assert sample(after, "travelbot_first_token_seconds_count") == 1
    assert sample(after, "travelbot_answers_total") == 1
    assert sample(after, "travelbot_output_tokens_total") > 0
    assert sample(after, "travelbot_queue_depth") == 0
    assert sample(after, "travelbot_requests_running") == 0


@pytest.mark.settings(http_port=FREE_PORT, max_queue=0)
async def test_metrics_count_errors_by_kind(bot: RunningBot) -> None:
    server, busy = bot.server, bot.services.texts.get("en", "error_busy")
    mark = server.mark()
    server.send_photo(TgUser(id=9602), small_photo())
    await server.wait_for(lambda c: busy in str(c.params.get("text")), after=mark, timeout=60)
    failed = 'travelbot_errors_total{kind="queue_full"} 1.0'
    metrics = await metrics_when(lambda path: get(bot, path), lambda m: failed in m)
    assert failed in metrics
    assert sample(metrics, "travelbot_answers_total") == 0


async def probe(path: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m bot.probe PATH`, the container's health check, configured like the bot."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    command = [sys.executable, "-m", "bot.probe", path]
    return await asyncio.to_thread(
        subprocess.run, command, env=environ | env, cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.settings(http_port=FREE_PORT)
async def test_probe_command_exits_0_only_when_the_bot_answers_200(bot: RunningBot) -> None:
    port = str(bot.services.settings.http_port)
    alive = await probe("/healthz", TRAVELBOT_HTTP_PORT=port, TRAVELBOT_HTTP_LISTEN="0.0.0.0")
    assert alive.returncode == 0 and '"alive": true' in alive.stdout
    await bot.services.worker.stop()
    ready = await probe("/readyz", TRAVELBOT_HTTP_PORT=port)
    assert ready.returncode == 1 and "worker: not running" in ready.stderr
    assert (await probe("/healthz")).returncode == 2  # no port configured
