"""The bot as deployed: a real `travelbot run --webhook URL` process with its HTTP port,
configured by TRAVELBOT_* variables, stopped with SIGTERM. Debug logs must contain neither
the bot token nor the webhook secret."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bot.settings import ROOT
from tests.conftest import free_port, small_photo
from tests.e2e.botapi_server import TOKEN, BotApiServer, TgUser, bot_process_env
from tests.e2e.test_health import metrics_when, sample
from tests.e2e.test_secrets_and_logs import polled
from tests.e2e.test_webhook import start_update

# The `travelbot` console script, run with this checkout's code (cwd first on sys.path)
TRAVELBOT = (sys.executable, "-c", "from bot.cli import main; main()")


async def wait_ready(http: aiohttp.ClientSession, base: str, bot: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert bot.poll() is None, "the bot exited"
        try:
            async with http.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("/readyz never answered 200")


async def http_get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def test_webhook_process_answers_reports_health_and_keeps_secrets(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    secret = f"test-{secrets.token_hex(16)}"
    http_port, webhook_port = free_port(), free_port()
    log = tmp_path / "bot.log"
    async with BotApiServer() as server, aiohttp.ClientSession() as http:
        env = bot_process_env(
            server,
            tiny_model_dir,
            tmp_path / "data" / "bot.sqlite3",
            max_new_tokens="8",
            webhook_port=str(webhook_port),
            webhook_secret_token=secret,
            http_port=str(http_port),
            log_format="json",
            log_level="DEBUG",
        )
        webhook = f"http://127.0.0.1:{webhook_port}/hook/telegram"
        bot = subprocess.Popen(
            [*TRAVELBOT, "run", "--webhook", webhook],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{http_port}"
            await wait_ready(http, base, bot)
            assert server.webhook_url == webhook and server.webhook_secret_token == secret
            ann = TgUser(id=9701)
            mark = server.mark()
            server.send_photo(ann, small_photo("EXIT"))
            await server.wait_for(lambda c: c.method == "deleteMessage", after=mark, timeout=60)
            refused = await server.post_to_webhook(start_update(ann, 99), secret_token="nope")
            assert refused == 403
            metrics = await metrics_when(
                lambda path: http_get(http, base + path),
                lambda m: sample(m, "travelbot_answers_total") == 1,
            )
            assert sample(metrics, "travelbot_answers_total") == 1
        finally:
            bot.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(bot.wait, 60)
    assert returncode == 0
    text = log.read_text()
    assert '"mode": "webhook"' in text and "http_started" in text
    assert secret not in text and TOKEN not in text


# The events of a start, from `travelbot run` to polling
STARTING = (
    "telegram_reached", "model_loading", "model_weights_progress", "model_weights_loaded",
    "model_loaded", "batch_engine_starting", "model_ready", "bot_started",
)  # fmt: skip


async def test_the_start_is_logged_from_the_checks_through_the_model_load_to_ready(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "bot.log"
    async with BotApiServer() as server:
        env = bot_process_env(server, tiny_model_dir, tmp_path / "bot.sqlite3", log_format="json")
        bot = subprocess.Popen(
            [*TRAVELBOT, "run"], env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        try:
            await polled(server, bot)
        finally:
            bot.send_signal(signal.SIGTERM)
            returncode = await asyncio.to_thread(bot.wait, 60)
    assert returncode == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    start = {name: next(e for e in events if e["event"] == name) for name in STARTING}
    # Telegram was asked before the model loaded; then a sign of life for every part of the
    # load (minutes for the full-size model), in this order
    assert [e["event"] for e in events if e["event"] in STARTING] == [
        "telegram_reached", "model_loading", *["model_weights_progress"] * 10,
        "model_weights_loaded", "model_loaded", "batch_engine_starting", "model_ready",
        "bot_started",
    ]  # fmt: skip
    progress = [e for e in events if e["event"] == "model_weights_progress"]
    assert [e["percent"] for e in progress] == list(range(10, 101, 10))
    assert progress[-1]["weights"] == progress[-1]["of"] > 10
    assert start["model_loading"]["path"] == str(tiny_model_dir)
    assert 0 < start["model_loaded"]["seconds"] <= start["model_ready"]["seconds"]
