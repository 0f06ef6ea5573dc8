"""The bot as deployed: a real `travelbot run --webhook URL` process with its HTTP port,
configured by TRAVELBOT_* variables, stopped with SIGTERM. Debug logs must contain neither
the bot token nor the webhook secret."""

from __future__ import annotations

import asyncio
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
