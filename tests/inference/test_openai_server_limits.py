"""`travelbot serve` bounded before it does any work: counts and sizes checked before an
image is decoded or a text tokenized, images decoded in their own pool, bad parameters a
400, slow clients timed out, a client that leaves cancels its request. Against the real app
on 127.0.0.1 with the tiny Gemma 4 model; raw HTTP where a client library would not send
what an attacker does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image, ImageDraw

from inference.openai_server import ServerConfig, create_app, start_site
from inference.openai_wire import image_data_url
from tests.conftest import OpenAIServer, png_bytes

MiB = 2**20


def api(server: OpenAIServer) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60)


def user_says(*content) -> dict:
    parts = [c if isinstance(c, dict) else {"type": "text", "text": c} for c in content]
    return {"model": "tiny-gemma4", "messages": [{"role": "user", "content": parts}]}


def image_part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": image_data_url(data)}}


class PeakRss:
    """How far this process's resident memory rose above its level at the start of the
    block (the server runs in this process), sampled from /proc every few milliseconds."""

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_many_tiny_images_are_refused_before_one_is_decoded(
    openai_server: OpenAIServer,
) -> None:
    """0.44 MiB with 2,500 tiny images once drove the server to ~10 GB before a 500."""
    tiny = image_part(png_bytes(Image.new("RGB", (16, 16), "white")))
    body = user_says(*[tiny] * 2500, "which one?")
    async with api(openai_server) as client:
        with PeakRss() as rss:
            start = time.monotonic()
            response = await client.post("/chat/completions", json=body)
            elapsed = time.monotonic() - start
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "too_many_images"
    assert elapsed < 5 and rss.growth < 100 * MiB, (elapsed, rss.growth)


async def test_long_texts_are_refused_before_they_are_tokenized(
    openai_server: OpenAIServer,
) -> None:
    """An 8 MiB text once took 48 s and 2.3 GB to tokenize before its length was checked."""
    many_messages = [{"role": "user", "content": "ab " * 10_000} for _ in range(4)]
    cases = [
        (user_says("Ausgang " * MiB), "message_too_long"),
        ({"model": "tiny-gemma4", "messages": many_messages}, "prompt_too_long"),
    ]
    async with api(openai_server) as client:
        for body, code in cases:
            with PeakRss() as rss:
                start = time.monotonic()
                response = await client.post("/chat/completions", json=body)
                elapsed = time.monotonic() - start
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == code
            assert elapsed < 5 and rss.growth < 200 * MiB, (code, elapsed, rss.growth)


async def test_a_body_of_countless_small_json_values_is_refused_unparsed(
    openai_server: OpenAIServer,
) -> None:
    """20 MB of `[],` is within the body limit (which has room for photos) but would parse
    into millions of Python lists: refused by counting, before it is parsed."""
    body = json.dumps(user_says("Exit?") | {"max_tokens": 1})
    content = (body[:-1] + ', "metadata": [' + "[]," * (7 * MiB) + "[]]}").encode()
    async with api(openai_server) as client:
        with PeakRss() as rss:
            response = await client.post("/chat/completions", content=content)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "too_many_values"
    assert rss.growth < 150 * MiB, rss.growth


async def test_a_body_larger_than_any_allowed_request_is_refused_unread(
    openai_server: OpenAIServer,
) -> None:
    """The limit follows the request limits (4 images of 20 MB, the texts): a body that
    announces more is answered 413 at once, without waiting for its bytes."""
    head = raw_head("POST", "/v1/chat/completions", openai_server.api_key, length=200 * MiB)
    async with connection(openai_server) as (reader, writer):
        writer.write(head)
        status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line


@pytest.fixture(scope="module")
def large_png() -> bytes:
    """36 megapixels (the limit is 40): ~2 s of CPU to decode and scale, 0.1 MB to send."""
    image = Image.new("RGB", (6000, 6000), "white")
    ImageDraw.Draw(image).text((100, 100), "AUSGANG", fill="black")
    return png_bytes(image)


async def test_a_text_request_is_answered_while_large_photos_are_decoded(
    openai_server: OpenAIServer, large_png: bytes
) -> None:
    """Photos used to be decoded on asyncio's default executor, where the text request
    waited its turn: more photo requests than that executor has threads stalled it."""
    num_photos = min(32, (os.cpu_count() or 1) + 4) + 2  # the default executor's threads + 2
    photo = user_says(image_part(large_png), "What does it say?") | {"max_tokens": 1}
    text = user_says("Where is the exit?") | {"max_tokens": 1}
    async with api(openai_server) as client:
        photos = [asyncio.create_task(client.post("/chat/completions", json=photo))
                  for _ in range(num_photos)]  # fmt: skip
        await wait_until(lambda: openai_server.num_in_flight == num_photos)
        start = time.monotonic()
        answer = await client.post("/chat/completions", json=text)
        elapsed = time.monotonic() - start
        photos_in_flight = sum(not task.done() for task in photos)
        for task in photos:  # their clients leave: the photos not yet decoded never will be
            task.cancel()
        await asyncio.gather(*photos, return_exceptions=True)
    assert answer.status_code == 200, answer.text
    assert photos_in_flight and elapsed < 3, (photos_in_flight, elapsed)


HUGE = "1" + "0" * 400  # an integer no float holds


@pytest.mark.parametrize(
    "body",
    [
        '{"messages": ' + "[" * 1000 + "]" * 1000 + "}",
        '{"max_tokens": 1e400, "messages": %s}',
        '{"top_k": 1e400, "messages": %s}',
        '{"top_k": ' + HUGE + ', "messages": %s}',
        '{"temperature": NaN, "messages": %s}',
        '{"temperature": Infinity, "messages": %s}',
        '{"stream": "no", "messages": %s}',
    ],
)
async def test_bad_parameters_are_a_400(openai_server: OpenAIServer, body: str) -> None:
    """Not a 500 (nesting, numbers no integer holds), nor taken (NaN, "no" as true)."""
    messages = json.dumps([{"role": "user", "content": "Exit?"}])
    async with api(openai_server) as client:
        response = await client.post("/chat/completions", content=body.replace("%s", messages))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")


@pytest.mark.parametrize(
    ("name", "value", "off"),
    [
        ("n", 0, 1),
        ("stop", ["\n"], None),
        ("seed", 7, None),
        ("response_format", {"type": "json_object"}, {"type": "text"}),
        ("tools", [{"type": "function", "function": {"name": "f"}}], []),
    ],
)
async def test_what_the_engine_cannot_honour_is_refused_unless_off(
    openai_server: OpenAIServer, name: str, value, off
) -> None:
    """Refused rather than silently ignored; clients that always send it, off, still pass."""
    async with api(openai_server) as client:
        refused = await client.post("/chat/completions", json=user_says("Exit?") | {name: value})
        off_body = user_says("Exit?") | {name: off, "max_tokens": 1}
        accepted = await client.post("/chat/completions", json=off_body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "unsupported_parameter"
    assert accepted.status_code == 200, accepted.text


async def test_a_prompt_too_long_for_the_engine_is_a_400(openai_server: OpenAIServer) -> None:
    """Within the character limits, but more tokens than the engine's 2,048 positions."""
    async with api(openai_server) as client:
        response = await client.post("/chat/completions", json=user_says("Ausgang " * 4000))
    assert response.status_code == 400, response.text
    assert "too long" in response.json()["error"]["message"]


async def test_an_authorization_header_that_is_not_utf8_is_a_401(
    openai_server: OpenAIServer,
) -> None:
    head = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
    async with connection(openai_server) as (reader, writer):
        writer.write(head)
        status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 401"), status_line


# Slow clients, on an app with 1 s timeouts in front of the tiny model's worker


@pytest.fixture
async def impatient_server(openai_server: OpenAIServer) -> AsyncIterator[OpenAIServer]:
    config = ServerConfig(
        openai_server.model_name, openai_server.api_key, idle_timeout_s=1, body_timeout_s=1
    )
    runner, port = await start_site(create_app(openai_server.worker, config), "127.0.0.1", 0)
    yield OpenAIServer(
        f"http://127.0.0.1:{port}/v1", config.api_key, config.model_name, openai_server.worker
    )
    await runner.cleanup()


async def test_half_a_request_line_is_cut_off(impatient_server: OpenAIServer) -> None:
    async with connection(impatient_server) as (reader, writer):
        writer.write(b"POST /v1/chat/compl")
        start = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    assert time.monotonic() - start < 3


async def test_a_trickled_body_is_answered_408(impatient_server: OpenAIServer) -> None:
    head = raw_head("POST", "/v1/chat/completions", impatient_server.api_key, length=10_000)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for _ in range(50):  # 10 s at most; the server gives up after 1 s
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with connection(impatient_server) as (reader, writer):
        writer.write(head)
        trickling = asyncio.create_task(trickle(writer))
        try:
            start = time.monotonic()
            status_line = await asyncio.wait_for(reader.readline(), 5)
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert time.monotonic() - start < 3


# A client that leaves


async def test_a_client_that_leaves_stops_its_generation(openai_server: OpenAIServer) -> None:
    """Not streamed: nothing is written until the end, so only the closed connection tells
    the server. This prompt makes the tiny model talk for 1,800 tokens (~20 s on a CPU)."""
    body = json.dumps(
        user_says("Where is the exit?") | {"max_tokens": 1800, "temperature": 0}
    ).encode()
    head = raw_head("POST", "/v1/chat/completions", openai_server.api_key, length=len(body))
    worker = openai_server.worker
    async with connection(openai_server) as (_reader, writer):
        writer.write(head + body)
        await wait_until(lambda: worker.num_running == 1)
        await asyncio.sleep(0.5)  # some tokens into it
    await wait_until(lambda: worker.num_running == 0, timeout=3)


def raw_head(method: str, path: str, api_key: str, *, length: int) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@contextlib.asynccontextmanager
async def connection(
    server: OpenAIServer,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(server.base_url).port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def wait_until(condition, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
