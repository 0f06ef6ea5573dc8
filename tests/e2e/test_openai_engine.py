"""The bot with engine="openai": a real `travelbot serve` (tiny Gemma 4 on CPU) answers
over HTTP, reached through the RemoteWorker."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from inference import RemoteWorker
from tests.conftest import OpenAIServer, RunningBot
from tests.e2e.botapi_server import TgUser
from tests.e2e.test_conversation import final_answer_after, reply_after

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine_overrides(openai_server: OpenAIServer) -> dict:
    return {
        "engine": "openai",
        "openai_base_urls": [openai_server.base_url],
        "openai_model": openai_server.model_name,
        "openai_api_key": openai_server.api_key,
    }


async def test_photo_and_follow_up_are_answered_through_the_server(
    bot: RunningBot, openai_server: OpenAIServer, sign_png: bytes
) -> None:
    assert isinstance(bot.services.worker, RemoteWorker)
    server = bot.server
    ann = TgUser(id=7001, first_name="Ann", language_code="en")
    openai_server.max_in_flight = 0

    mark = server.mark()
    server.send_photo(ann, sign_png, caption="What does it say?")
    await final_answer_after(bot, ann.id, mark)
    assert openai_server.max_in_flight == 1  # the answer came over HTTP
    history = await bot.storage.get_history(ann.id, ann.id, max_turns=10)
    assert [m.role for m in history] == ["user", "model"]

    mark = server.mark()
    server.send_text(ann, "/think")
    await reply_after(bot, ann.id, mark)
    mark = server.mark()
    server.send_text(ann, "And where is the exit?")  # history and the photo go along
    await final_answer_after(bot, ann.id, mark)
    history = await bot.storage.get_history(ann.id, ann.id, max_turns=10)
    assert [m.role for m in history] == ["user", "model", "user", "model"]


NO_TORCH_CLIENT = """
import asyncio, sys
sys.modules["torch"] = sys.modules["transformers"] = None  # importing them fails
import bot.app, bot.__main__
from bot.settings import Settings
from inference import Request

async def main():
    settings = Settings(_env_file=None, engine="openai", openai_base_urls=[sys.argv[1]],
                        openai_model=sys.argv[2], openai_api_key=sys.argv[3])
    worker = bot.__main__.create_worker(settings)
    await worker.start()
    request = Request(language="en", question="hi", max_new_tokens=2)
    print(type([e async for e in worker.submit(request)][-1]).__name__)
    await worker.stop()

asyncio.run(main())
"""


async def test_openai_engine_needs_no_torch(openai_server: OpenAIServer) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NO_TORCH_CLIENT,
        openai_server.base_url,
        openai_server.model_name,
        openai_server.api_key,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip().endswith("Finished")
