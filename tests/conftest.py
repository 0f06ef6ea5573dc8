"""Shared fixtures: the tiny Gemma 4 checkpoint, settings, a running bot against a local Bot API."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image, ImageDraw

from bot.__main__ import create_worker
from bot.app import running
from bot.context import Services
from bot.i18n import Texts
from bot.settings import Settings
from bot.storage import Storage
from bot.user_locks import UserLocks
from inference import EngineConfig, GemmaEngine, RuntimeConfig, Worker, create_engine
from inference.openai_server import ServerConfig, create_app, start_site
from tests.e2e.botapi_server import TOKEN, BotApiServer
from tools.samples import draw_menu, draw_sign


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gemma4"))


@pytest.fixture(scope="session")
def engine_config(tiny_model_dir: Path) -> EngineConfig:
    return EngineConfig(model_path=tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_engine(engine_config: EngineConfig) -> GemmaEngine:
    return GemmaEngine.load(engine_config)


def load_with_wide_window(engine_config: EngineConfig, window: int = 2048) -> GemmaEngine:
    """The tiny model with a sliding window wider than its prompts (as the full-size
    model's 1,024 is for a photo prompt): its sliding layers see the whole prompt."""
    base = GemmaEngine.load(engine_config)
    base.model.config.get_text_config().sliding_window = window
    for layer in base.model.model.language_model.layers:
        if layer.self_attn.sliding_window:
            layer.self_attn.sliding_window = window
    return base


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sign_png() -> bytes:
    return png_bytes(draw_sign(640, 480))


@pytest.fixture(scope="session")
def menu_jpeg() -> bytes:
    return png_bytes(draw_menu(480, 640), format="JPEG")


def small_photo(text: str = "EXIT") -> bytes:
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).text((20, 100), text, fill="black")
    return png_bytes(image, "JPEG")


def make_settings(tmp_path: Path, **overrides) -> Settings:
    values = {
        "telegram_token": TOKEN,
        "database_path": tmp_path / "bot.sqlite3",
        "max_new_tokens": 16,
        "stream_interval_s": 0.0,
        "log_format": "console",
        "telegram_messages_per_second": 0,  # the local server has no flood limits
        "telegram_messages_per_minute_per_group": 0,
        "device": "cpu",
        "max_batch_size": 8,
        "max_seq_len": 2048,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


FREE_PORT = -1  # @pytest.mark.settings(http_port=FREE_PORT): a free local port
LOCAL_WEBHOOK = "local"  # @pytest.mark.settings(webhook_url=LOCAL_WEBHOOK): webhook mode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_ports(overrides: dict) -> dict:
    """Replace FREE_PORT and LOCAL_WEBHOOK with free ports on 127.0.0.1."""
    if overrides.get("http_port") == FREE_PORT:
        overrides["http_port"] = free_port()
    if overrides.get("webhook_url") == LOCAL_WEBHOOK:
        port = free_port()
        overrides |= {"webhook_port": port, "webhook_url": f"http://127.0.0.1:{port}/telegram"}
    return overrides


@dataclass
class RunningBot:
    server: BotApiServer
    services: Services

    @property
    def storage(self) -> Storage:
        return self.services.storage


@pytest.fixture
def engine_overrides() -> dict:
    """Settings for the `bot` fixture's engine; a test module may override this fixture."""
    return {}


@pytest.fixture
async def bot(
    tmp_path: Path, tiny_model_dir: Path, engine_overrides: dict, request
) -> AsyncIterator[RunningBot]:
    """The whole bot: real PTB Application, real worker with the tiny model, real SQLite,
    polling a local Bot API server. Settings can be overridden with
    `@pytest.mark.settings(name=value)`; see FREE_PORT and LOCAL_WEBHOOK for HTTP."""
    marker = request.node.get_closest_marker("settings")
    overrides = local_ports({**engine_overrides, **(marker.kwargs if marker else {})})
    server = BotApiServer()
    await server.start()
    settings = make_settings(
        tmp_path,
        telegram_base_url=server.base_url,
        telegram_base_file_url=server.base_file_url,
        model_path=tiny_model_dir,
        **overrides,
    )
    storage = await Storage.open(settings.database_path)
    worker = create_worker(settings)
    await worker.start()
    services = Services(settings, storage, worker, Texts.load(settings.locales_dir), UserLocks())
    try:
        async with running(services):
            yield RunningBot(server, services)
    finally:
        await worker.stop()
        await storage.close()
        await server.stop()


# OpenAI-compatible server (`travelbot serve`) with the tiny model


@dataclass
class OpenAIServer:
    base_url: str  # ends with /v1
    api_key: str
    model_name: str
    worker: Worker
    num_in_flight: int = 0  # chat completions being answered, counted by the server
    max_in_flight: int = 0  # the most at once since a test reset it

    @web.middleware
    async def count_in_flight(self, request: web.Request, handler):
        if request.path != "/v1/chat/completions":
            return await handler(request)
        self.num_in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.num_in_flight)
        try:
            return await handler(request)
        finally:
            self.num_in_flight -= 1


@pytest.fixture(scope="session")
async def openai_server(engine_config: EngineConfig) -> AsyncIterator[OpenAIServer]:
    """`travelbot serve`'s app on a free port, its own batching worker on the tiny model."""
    runtime = RuntimeConfig(max_slots=4, max_seq_len=2048)
    worker = Worker(lambda: create_engine(engine_config, runtime), max_queue=16)
    await worker.start()
    config = ServerConfig(model_name="tiny-gemma4", api_key="test-key", default_max_tokens=8)
    server = OpenAIServer("", config.api_key, config.model_name, worker)
    try:
        async with serving(worker, config, server.count_in_flight) as server.base_url:
            yield server
    finally:
        await worker.stop()


@contextlib.asynccontextmanager
async def serving(worker: Worker, config: ServerConfig, *middlewares) -> AsyncIterator[str]:
    """`travelbot serve`'s app over `worker` on a free local port; yields its /v1 URL."""
    app = create_app(worker, config)
    app.middlewares.extend(middlewares)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


class RecordingServer:
    """`travelbot serve`'s app on the session's worker, keeping each chat request's body."""

    def __init__(self) -> None:
        self.base_url = ""
        self.bodies: list[dict] = []

    @web.middleware
    async def record(self, request: web.Request, handler):
        if request.path == "/v1/chat/completions":
            self.bodies.append(await request.json())  # aiohttp keeps the body for the handler
        return await handler(request)

    def system_messages(self, index: int = -1) -> list[str]:
        """The system messages of a request (the latest by default), in order."""
        return [m["content"] for m in self.bodies[index]["messages"] if m["role"] == "system"]

    def system_text(self) -> str:
        """The system messages of the latest request (one or several, as the wire puts it)."""
        return "\n".join(self.system_messages())


@pytest.fixture
async def recording_server(openai_server: OpenAIServer) -> AsyncIterator[RecordingServer]:
    server = RecordingServer()
    config = ServerConfig(openai_server.model_name, openai_server.api_key, default_max_tokens=8)
    async with serving(openai_server.worker, config, server.record) as server.base_url:
        yield server


# Scripted model outputs, for tests of what the bot makes of a block (never of the model)

PIECE_CHARS = 3  # the scripted server streams its text in pieces this long


class ScriptedChatServer:
    """An OpenAI-compatible chat endpoint whose answers are SCRIPTED texts, streamed as
    server-sent events; it keeps each request body (what the bot sent as the prompt)."""

    MODEL = "scripted-gemma"

    def __init__(self) -> None:
        self.base_url = ""
        self.answers: list[tuple[str, str]] = []  # (text, finish reason), used in order
        self.bodies: list[dict] = []

    def script(self, text: str, finish_reason: str = "stop") -> None:
        self.answers.append((text, finish_reason))

    def engine_settings(self) -> dict:
        """The bot's settings that make this server its engine (through RemoteWorker)."""
        return {"engine": "openai", "openai_base_urls": [self.base_url], "openai_model": self.MODEL}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.MODEL}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        text, reason = self.answers.pop(0) if self.answers else ("Plain answer.", "stop")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for start in range(0, len(text), PIECE_CHARS):
            await self._send(response, {"content": text[start : start + PIECE_CHARS]}, None)
            await asyncio.sleep(0.002)
        await self._send(response, {}, reason)
        await response.write(b"data: [DONE]\n\n")
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, delta: dict, reason: str | None) -> None:
        chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())


@dataclass
class FeedServer:
    """Serves the ECB's daily reference rates file as a test sets it; counts the requests."""

    url: str = ""
    body: str = ""
    status: int = 200
    delay_s: float = 0.0
    trickle_s: float = 0.0  # > 0: the body a byte at a time, this long apart
    requests: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        await asyncio.sleep(self.delay_s)
        if not self.trickle_s:
            return web.Response(text=self.body, status=self.status, content_type="text/xml")
        response = web.StreamResponse(status=self.status, headers={"Content-Type": "text/xml"})
        await response.prepare(request)
        for byte in self.body.encode():
            await response.write(bytes([byte]))
            await asyncio.sleep(self.trickle_s)
        return response


ECB_DAILY = """<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
  xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
  <gesmes:subject>Reference rates</gesmes:subject>
  <gesmes:Sender><gesmes:name>European Central Bank</gesmes:name></gesmes:Sender>
  <Cube>
    <Cube time='{date}'>
      <Cube currency='USD' rate='1.0500'/>
      <Cube currency='JPY' rate='{jpy}'/>
      <Cube currency='GBP' rate='0.8400'/>
    </Cube>
  </Cube>
</gesmes:Envelope>
"""


@pytest.fixture
async def feed() -> AsyncIterator[FeedServer]:
    """A local server of the ECB's daily file (2026-12-04, 160 JPY to the euro)."""
    server = FeedServer(body=ECB_DAILY.format(date="2026-12-04", jpy="160.00"))
    app = web.Application()
    app.router.add_get("/eurofxref-daily.xml", server.handle)
    async with local_site(app) as port:
        server.url = f"http://127.0.0.1:{port}/eurofxref-daily.xml"
        yield server


@pytest.fixture
async def scripted_server() -> AsyncIterator[ScriptedChatServer]:
    server = ScriptedChatServer()
    app = web.Application()
    app.router.add_get("/v1/models", server.models)
    app.router.add_post("/v1/chat/completions", server.chat)
    async with local_site(app) as port:
        server.base_url = f"http://127.0.0.1:{port}/v1"
        yield server


@contextlib.asynccontextmanager
async def local_site(app: web.Application) -> AsyncIterator[int]:
    """`app` served on a free port of 127.0.0.1; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
