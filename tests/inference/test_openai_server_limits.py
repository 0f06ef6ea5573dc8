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
from tests.inference.test_openai_server import prometheus_samples, wait_until

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
    """The limit follows the request limits (80 MB of images, the texts): a body that
    announces more is answered 413 at once, without waiting for its bytes."""
    head = raw_head("POST", "/v1/chat/completions", openai_server.api_key, length=200 * MiB)
    async with connection(openai_server) as (reader, writer):
        writer.write(head)
        status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line


@pytest.mark.parametrize(
    "where",
    ["top level", "message", "text part", "data URL under another key"],
)
async def test_a_body_too_large_outside_its_images_is_a_413(
    openai_server: OpenAIServer, where: str
) -> None:
    """Besides its images a body is text and parameters: more bytes of it than the text
    limits allow (0.9 MiB) is a 413, wherever they hide, even in a data URL that is no
    image part's. (They were taken up to the body limit, which has room for 4 photos.)"""
    pad = "a" * (2 * MiB)
    body = user_says("Exit?") | {"max_tokens": 1}
    if where == "top level":
        body["pad"] = pad
    elif where == "message":
        body["messages"][0]["pad"] = pad
    elif where == "text part":
        body["messages"][0]["content"][0]["pad"] = pad
    else:
        body["metadata"] = {"image_url": {"url": "data:image/png;base64," + pad}}
    async with api(openai_server) as client:
        response = await client.post("/chat/completions", json=body)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "body_too_large"


async def test_a_huge_text_body_leaves_the_server_responsive(openai_server: OpenAIServer) -> None:
    """100 MiB under an unknown key, within the body limit (which has room for 4 photos),
    was parsed on the event loop: +285 MB, /health stalled ~1 s, and then a 200. (Sent in
    pieces: this test's client shares the event loop.)"""
    body = json.dumps(user_says("Exit?") | {"max_tokens": 1})
    content = memoryview((body[:-1] + ', "pad": "' + "a" * (100 * MiB) + '"}').encode())
    head = raw_head("POST", "/v1/chat/completions", openai_server.api_key, length=len(content))

    async def post() -> tuple[bytes, dict]:
        async with connection(openai_server) as (reader, writer):
            writer.write(head)
            for at in range(0, len(content), MiB):
                writer.write(content[at : at + MiB])
                await writer.drain()
            return await asyncio.wait_for(read_answer(reader), 30)

    root = openai_server.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as probe:
        with PeakRss() as rss:
            posting = asyncio.create_task(post())
            latencies = []
            while not posting.done():
                start = time.monotonic()
                assert (await probe.get("/health")).status_code == 200
                latencies.append(time.monotonic() - start)
                await asyncio.sleep(0.01)
            status_line, answer = await posting
    assert status_line.startswith(b"HTTP/1.1 413"), (status_line, answer)
    assert answer["error"]["code"] == "body_too_large"
    assert max(latencies) < 0.2, latencies
    assert rss.growth < 160 * MiB, rss.growth  # the body itself: 100 MiB


async def test_photos_larger_than_the_text_limit_are_taken(openai_server: OpenAIServer) -> None:
    """A photo's base64 is not counted as text, however the client's JSON escapes it (PHP's
    json_encode writes every / as \\/)."""
    noise = Image.frombytes("RGB", (800, 800), os.urandom(800 * 800 * 3))
    body = user_says(image_part(png_bytes(noise)), "What is it?") | {"max_tokens": 1}
    plain = json.dumps(body)
    assert len(plain) > MiB  # the text limit: 0.9 MiB
    async with api(openai_server) as client:
        for content in (plain, plain.replace("/", "\\/")):
            response = await client.post("/chat/completions", content=content.encode())
            assert response.status_code == 200, response.text


async def test_a_lone_surrogate_is_a_400(openai_server: OpenAIServer) -> None:
    """JSON's \\ud800 is no character the tokenizer can encode: refused before it is tried
    (which logged a traceback as an error)."""
    content = b'{"messages": [{"role": "user", "content": "Exit \\ud800?"}], "max_tokens": 1}'
    async with api(openai_server) as client:
        response = await client.post("/chat/completions", content=content)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_text"


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


async def test_slow_uploads_hold_no_place_in_the_queue(openai_server: OpenAIServer) -> None:
    """MAX_QUEUE clients sending a header and one byte of their body held every place in
    the queue until the body timeout: every other client got 429 queue_full."""
    worker = openai_server.worker
    head = raw_head("POST", "/v1/chat/completions", openai_server.api_key, length=1000)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(worker.max_queue):
            _, writer = await stack.enter_async_context(connection(openai_server))
            writer.write(head + b"{")
        await wait_until(lambda: openai_server.num_in_flight == worker.max_queue)
        async with api(openai_server) as client:
            response = await client.post("/chat/completions", json=user_says("Exit?"))
        samples = await metrics(openai_server)
    assert response.status_code == 200, response.text
    assert samples["travelbot_serve_bodies_reading"] == worker.max_queue
    assert samples["travelbot_serve_queue_depth"] == 0


async def test_large_uploads_beyond_their_limit_are_refused_at_once(
    openai_server: OpenAIServer,
) -> None:
    """Bodies over 64 KiB (a photo) are received a few at a time, so slow ones cannot hold
    unbounded memory: one more is a 429 before its body is read; small bodies still pass."""
    limit = ServerConfig("tiny-gemma4").max_large_uploads
    head = raw_head("POST", "/v1/chat/completions", openai_server.api_key, length=MiB)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(limit):
            _, writer = await stack.enter_async_context(connection(openai_server))
            writer.write(head + b"{")
        await wait_until(lambda: openai_server.num_in_flight == limit)
        reader, writer = await stack.enter_async_context(connection(openai_server))
        writer.write(head + b"{")
        status_line, answer = await asyncio.wait_for(read_answer(reader), 5)
        async with api(openai_server) as client:
            small = await client.post("/chat/completions", json=user_says("Exit?"))
        samples = await metrics(openai_server)
    assert status_line.startswith(b"HTTP/1.1 429"), (status_line, answer)
    assert answer["error"]["code"] == "too_many_uploads"
    assert small.status_code == 200, small.text
    assert samples["travelbot_serve_large_bodies_reading"] == limit


async def test_a_large_body_sent_too_slowly_is_cut_off_before_the_body_timeout(
    openai_server: OpenAIServer,
) -> None:
    """A photo trickled at 10 KiB/s held one of the few places for large bodies for the
    whole body timeout (60 s); it now must keep 64 KiB/s after its grace."""
    config = ServerConfig(openai_server.model_name, openai_server.api_key, upload_grace_s=0.5)
    assert config.body_timeout_s >= 60 and config.min_upload_bytes_per_s == 64 * 1024
    runner, port = await start_site(create_app(openai_server.worker, config), "127.0.0.1", 0)
    server = OpenAIServer(
        f"http://127.0.0.1:{port}/v1", config.api_key, config.model_name, openai_server.worker
    )
    head = raw_head("POST", "/v1/chat/completions", config.api_key, length=MiB)

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for _ in range(100):
            writer.write(b" " * 1024)
            await writer.drain()
            await asyncio.sleep(0.1)

    try:
        async with connection(server) as (reader, writer):
            writer.write(head)
            trickling = asyncio.create_task(trickle(writer))
            try:
                start = time.monotonic()
                status_line, answer = await asyncio.wait_for(read_answer(reader), 10)
            finally:
                trickling.cancel()
                await asyncio.gather(trickling, return_exceptions=True)
        samples = await metrics(server)
    finally:
        await runner.cleanup()
    assert status_line.startswith(b"HTTP/1.1 408"), (status_line, answer)
    assert time.monotonic() - start < 3
    assert samples["travelbot_serve_large_bodies_reading"] == 0


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


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, dict]:
    """The status line and the JSON body of an answer."""
    head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    name = b"content-length:"
    length = next(int(line[len(name) :]) for line in head if line.lower().startswith(name))
    return head[0], json.loads(await reader.readexactly(length))


async def metrics(server: OpenAIServer) -> dict[str, float]:
    root = server.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as http:
        return prometheus_samples((await http.get("/metrics")).text)
