"""`travelbot serve` through the official `openai` client: the tiny Gemma 4 model behind
it, and a scripted engine where a test needs thoughts or a stuck queue."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import torch

from inference import (
    ChatMessage,
    Delta,
    Finished,
    GemmaEngine,
    InferenceError,
    Request,
    Sampling,
    Worker,
    normalize_image,
)
from inference.openai_server import ServerConfig, create_app, start_site
from inference.openai_wire import image_data_url
from inference.remote import RemoteConfig, RemoteWorker
from tests.conftest import OpenAIServer, small_photo

SYSTEM = "Answer briefly."


def client(server: OpenAIServer, api_key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.base_url, api_key=api_key or server.api_key, max_retries=0
    )


def photo_messages(photo: bytes, question: str = "What does it say?") -> list[dict]:
    content = [
        {"type": "image_url", "image_url": {"url": image_data_url(photo)}},
        {"type": "text", "text": question},
    ]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


async def test_models_lists_the_served_model(openai_server: OpenAIServer) -> None:
    models = await client(openai_server).models.list()
    assert [model.id for model in models.data] == ["tiny-gemma4"]


async def test_answer_with_an_image_is_what_the_worker_answers(
    openai_server: OpenAIServer,
) -> None:
    photo = small_photo("AUSGANG")
    response = await client(openai_server).chat.completions.create(
        model="tiny-gemma4", messages=photo_messages(photo), max_tokens=6, temperature=0
    )
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 6
    # the same chat submitted to the server's worker directly: same prompt, same answer
    chat = (
        ChatMessage("system", SYSTEM),
        ChatMessage("user", "What does it say?", (normalize_image(photo),)),
    )
    request = Request(language="", chat=chat, max_new_tokens=6, sampling=Sampling(0.0))
    finished = [e async for e in openai_server.worker.submit(request)][-1]
    assert choice.message.content == finished.text
    assert response.usage.prompt_tokens == finished.num_prompt_tokens > 70  # image tokens
    assert response.usage.completion_tokens == finished.num_output_tokens


async def test_streamed_answer_matches_the_whole_answer(openai_server: OpenAIServer) -> None:
    kwargs = {"model": "tiny-gemma4", "messages": photo_messages(small_photo()), "max_tokens": 6}
    whole = await client(openai_server).chat.completions.create(**kwargs, temperature=0)
    stream = await client(openai_server).chat.completions.create(
        **kwargs, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


async def test_thinking_switch_reaches_the_prompt(
    openai_server: OpenAIServer, tiny_engine: GemmaEngine
) -> None:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Where is the exit?"},
    ]
    prompt_tokens = {}
    for think in (False, True):
        response = await client(openai_server).chat.completions.create(
            model="tiny-gemma4",
            messages=messages,
            max_tokens=2,
            extra_body={"chat_template_kwargs": {"enable_thinking": think}, "top_k": 5},
        )
        prompt_tokens[think] = response.usage.prompt_tokens

    # on: <|think|> opens the system turn; off: the model turn opens with a closed thought
    def count(text: str) -> int:
        return len(tiny_engine.tokenizer(text, add_special_tokens=False).input_ids)

    on, off = count("<|think|>\n"), count("<|channel>thought\n<channel|>")
    assert prompt_tokens[True] == prompt_tokens[False] + on - off


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (image_data_url(b"not an image at all"), "invalid_image"),
        ("data:image/jpeg;base64,%%%", "invalid_image"),
        ("https://example.com/sign.jpg", "invalid_image"),
    ],
)
async def test_bad_image_is_a_400(openai_server: OpenAIServer, url: str, code: str) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(openai.BadRequestError) as caught:
        await client(openai_server).chat.completions.create(model="tiny-gemma4", messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == code and caught.value.body["type"]


async def test_bad_requests_are_openai_errors(openai_server: OpenAIServer) -> None:
    api = client(openai_server)
    with pytest.raises(openai.AuthenticationError) as caught:
        await client(openai_server, api_key="wrong").models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError):
        await api.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError, match="last message"):
        await api.chat.completions.create(
            model="tiny-gemma4", messages=[{"role": "assistant", "content": "hi"}]
        )
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="n=1"):
        await api.chat.completions.create(model="tiny-gemma4", messages=hi, n=2)
    with pytest.raises(openai.BadRequestError, match="chat_template_kwargs"):
        await api.chat.completions.create(
            model="tiny-gemma4", messages=hi, extra_body={"chat_template_kwargs": "yes"}
        )


# A scripted engine behind the real Worker and server: a thought, then an answer.


class ScriptedEngine:
    """The worker's Engine protocol with a fixed answer; `gate` holds each step."""

    max_slots = 1
    device = torch.device("cpu")

    def __init__(self) -> None:
        self._active: list = []
        self.num_added = 0  # requests that reached the engine (would have been prefilled)
        self.gate = threading.Event()
        self.gate.set()
        self.fails_after_first_delta = False

    @property
    def num_active(self) -> int:
        return len(self._active)

    def preparer(self) -> None:
        return None

    def prepare(self, request: Request, inputs_of=None) -> Request:
        return request

    def add(self, prepared, emit, is_cancelled) -> None:
        self.num_added += 1
        self._active.append(emit)

    def step(self) -> None:
        self.gate.wait(timeout=10)
        emit = self._active.pop(0)
        emit(Delta("The sign is German.", is_thought=True))
        if self.fails_after_first_delta:
            emit(InferenceError("generation failed: RuntimeError"))
            return
        emit(Delta("Exit"))
        emit(Finished("Exit", "The sign is German.", 7, 4, "stop"))

    def fail_all(self, error) -> None:
        for emit in self._active:
            emit(error)
        self._active.clear()


@pytest.fixture
async def scripted_server() -> AsyncIterator[tuple[OpenAIServer, ScriptedEngine]]:
    engine = ScriptedEngine()
    worker = Worker(lambda: engine, max_queue=1)
    await worker.start()
    runner, port = await start_site(
        create_app(worker, ServerConfig(model_name="scripted")), "127.0.0.1", 0
    )
    yield OpenAIServer(f"http://127.0.0.1:{port}/v1", "unused", "scripted", worker), engine
    engine.gate.set()
    await runner.cleanup()
    await worker.stop()


async def test_thought_is_sent_as_reasoning_content_scripted_engine(scripted_server) -> None:
    server, _ = scripted_server
    api = client(server)
    messages = [{"role": "user", "content": "hi"}]
    whole = await api.chat.completions.create(model="scripted", messages=messages)
    assert whole.choices[0].message.content == "Exit"
    assert whole.choices[0].message.reasoning_content == "The sign is German."
    stream = await api.chat.completions.create(model="scripted", messages=messages, stream=True)
    deltas = [c.choices[0].delta async for c in stream]
    assert [d.reasoning_content for d in deltas if d.model_extra.get("reasoning_content")] == [
        "The sign is German."
    ]
    assert "".join(d.content or "" for d in deltas) == "Exit"
    # and the remote engine client turns it back into thought deltas
    remote = RemoteWorker(RemoteConfig((server.base_url,), model="scripted"))
    await remote.start()
    events = [e async for e in remote.submit(Request(language="en", question="hi", think=True))]
    await remote.stop()
    assert Delta("The sign is German.", is_thought=True) in events
    finished = events[-1]
    assert (finished.text, finished.thought, finished.num_output_tokens) == (
        "Exit",
        "The sign is German.",
        4,
    )


async def test_failure_after_the_first_token_is_an_error_event_scripted_engine(
    scripted_server,
) -> None:
    server, engine = scripted_server
    engine.fails_after_first_delta = True
    stream = await client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="generation failed"):
        [chunk async for chunk in stream]
    remote = RemoteWorker(RemoteConfig((server.base_url,), model="scripted"))
    await remote.start()
    events = remote.submit(Request(language="en", question="hi"))
    try:
        with pytest.raises(InferenceError, match="the engine failed: generation failed"):
            [event async for event in events]
    finally:
        await remote.stop()


HI_MESSAGES = [{"role": "user", "content": "hi"}]


async def hold_engine_and_queue(server, engine, api) -> tuple[asyncio.Task, asyncio.Task]:
    """The scripted engine held by one request and a second waiting (max_queue=1: full)."""
    messages = HI_MESSAGES
    engine.gate.clear()
    running = asyncio.create_task(api.chat.completions.create(model="scripted", messages=messages))
    await wait_until(lambda: server.worker.num_running == 1)
    waiting = asyncio.create_task(api.chat.completions.create(model="scripted", messages=messages))
    await wait_until(lambda: server.worker.queue_depth == 1)
    return running, waiting


async def test_full_queue_is_a_429_and_stopped_worker_a_503_scripted_engine(
    scripted_server,
) -> None:
    server, engine = scripted_server
    api = client(server)
    messages = HI_MESSAGES
    running, waiting = await hold_engine_and_queue(server, engine, api)
    with pytest.raises(openai.RateLimitError) as caught:
        await api.chat.completions.create(model="scripted", messages=messages)
    assert caught.value.body["code"] == "queue_full"
    engine.gate.set()
    assert [(await t).choices[0].message.content for t in (running, waiting)] == ["Exit", "Exit"]
    await server.worker.stop()
    with pytest.raises(openai.InternalServerError) as caught:
        await api.chat.completions.create(model="scripted", messages=messages)
    assert caught.value.status_code == 503


async def test_full_queue_is_a_429_before_the_body_is_read_scripted_engine(
    scripted_server,
) -> None:
    """A request that will not be queued costs no CPU: refused before its body is read (a
    body that is not even JSON, which would otherwise be a 400)."""
    server, engine = scripted_server
    api = client(server)
    running, waiting = await hold_engine_and_queue(server, engine, api)
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        response = await http.post("/chat/completions", content=b"{not json")
    assert response.status_code == 429 and response.json()["error"]["code"] == "queue_full"
    engine.gate.set()
    await asyncio.gather(running, waiting)


async def test_a_streaming_client_that_leaves_while_queued_gives_its_place_up_scripted_engine(
    scripted_server,
) -> None:
    server, engine = scripted_server
    api = client(server)
    messages = [{"role": "user", "content": "hi"}]
    engine.gate.clear()  # the first request holds the engine
    running = asyncio.create_task(api.chat.completions.create(model="scripted", messages=messages))
    await wait_until(lambda: server.worker.num_running == 1)

    async def wait_in_queue() -> None:
        stream = await api.chat.completions.create(model="scripted", messages=messages, stream=True)
        async for _ in stream:  # Queued sends nothing: this waits for the first token
            pass

    leaving = asyncio.create_task(wait_in_queue())
    await wait_until(lambda: server.worker.queue_depth == 1)
    leaving.cancel()  # the client closes its connection
    await asyncio.gather(leaving, return_exceptions=True)
    await wait_until(lambda: server.worker.queue_depth == 0, timeout=3)  # engine still held
    # its place is free for another (max_queue=1: it would be a 429 otherwise)
    staying = asyncio.create_task(api.chat.completions.create(model="scripted", messages=messages))
    await wait_until(lambda: server.worker.queue_depth == 1)
    engine.gate.set()
    assert [(await t).choices[0].message.content for t in (running, staying)] == ["Exit", "Exit"]
    assert engine.num_added == 2  # the one that left never reached the engine


async def test_health_and_metrics_scripted_engine(scripted_server) -> None:
    """/health as vLLM's (200 while the engine runs); /metrics in Prometheus text."""
    server, engine = scripted_server
    api = client(server)
    messages = [{"role": "user", "content": "hi"}]
    root = server.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as http:
        assert (await http.get("/health")).status_code == 200
        await api.chat.completions.create(model="scripted", messages=messages)
        running, waiting = await hold_engine_and_queue(server, engine, api)
        with pytest.raises(openai.RateLimitError):
            await api.chat.completions.create(model="scripted", messages=messages)
        response = await http.get("/metrics")
        assert response.headers["Content-Type"].startswith("text/plain")
        samples = prometheus_samples(response.text)
        assert samples["travelbot_serve_queue_depth"] == 1
        assert samples["travelbot_serve_requests_running"] == 1
        assert samples['travelbot_serve_requests_total{status="200"}'] == 1
        assert samples['travelbot_serve_requests_total{status="429"}'] == 1
        assert samples["travelbot_serve_request_seconds_count"] == 2
        engine.gate.set()
        await asyncio.gather(running, waiting)
        await server.worker.stop()
        assert (await http.get("/health")).status_code == 503


async def test_health_and_metrics_need_no_key(openai_server: OpenAIServer) -> None:
    """As with vLLM: probes and scrapers carry no key; the API still wants it."""
    root = openai_server.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as http:
        assert (await http.get("/health")).status_code == 200
        assert "travelbot_serve_queue_depth 0.0" in (await http.get("/metrics")).text
        assert (await http.get("/v1/models")).status_code == 401


def prometheus_samples(text: str) -> dict[str, float]:
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in lines}


async def wait_until(condition, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
