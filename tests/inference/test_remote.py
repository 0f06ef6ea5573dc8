"""RemoteWorker against a real `travelbot serve` (the tiny Gemma 4 model on CPU)."""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager

import pytest

from inference import (
    Delta,
    Finished,
    GemmaEngine,
    InferenceError,
    Queued,
    QueueFull,
    Request,
    Sampling,
    Started,
    Worker,
    WorkerStopped,
    normalize_image,
)
from inference.openai_server import ServerConfig, create_app, start_site
from inference.remote import RemoteConfig, RemoteWorker
from inference.worker import SequentialEngine
from tests.conftest import OpenAIServer

GREEDY = Sampling(temperature=0.0)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@asynccontextmanager
async def remote_worker(server: OpenAIServer, *urls: str, **config):
    config = {"model": server.model_name, "api_key": server.api_key, **config}
    worker = RemoteWorker(RemoteConfig(urls or (server.base_url,), **config))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


def question(text: str, max_new_tokens: int = 4) -> Request:
    return Request(language="en", question=text, max_new_tokens=max_new_tokens, sampling=GREEDY)


async def test_events_and_answer_are_the_local_workers(
    openai_server: OpenAIServer, sign_png: bytes
) -> None:
    request = Request(
        language="de",
        images=(normalize_image(sign_png),),
        question="Was steht da?",
        think=True,
        max_new_tokens=10,
        sampling=GREEDY,
    )
    async with remote_worker(openai_server) as worker:
        assert worker.is_alive and worker.device_memory_bytes() is None
        events = [event async for event in worker.submit(request)]
        assert (worker.num_running, worker.queue_depth) == (0, 0)
        await worker.forget("a")  # the servers' caches are theirs: nothing to drop here
    local = [event async for event in openai_server.worker.submit(request)]
    assert events[:2] == [Queued(1), Started()]
    deltas = [e for e in events if isinstance(e, Delta)]
    assert "".join(d.text for d in deltas if not d.is_thought) == "".join(
        d.text for d in local if isinstance(d, Delta) and not d.is_thought
    )
    finished, expected = events[-1], local[-1]
    assert isinstance(finished, Finished) and len(events) == 3 + len(deltas)
    assert finished == Finished(
        expected.text,
        expected.thought,
        expected.num_prompt_tokens,  # system prompt, image, <|think|>: the same prompt
        expected.num_output_tokens,
        expected.finish_reason,
    )


async def test_endpoint_that_is_down_is_skipped(openai_server: OpenAIServer) -> None:
    async with remote_worker(openai_server, closed_port_url(), openai_server.base_url) as worker:
        for text in ("one", "two", "three"):
            events = [event async for event in worker.submit(question(text))]
            assert isinstance(events[-1], Finished)
    async with remote_worker(openai_server, closed_port_url(), closed_port_url()) as worker:
        with pytest.raises(InferenceError, match="no engine endpoint answered: ConnectError"):
            await collect(worker, question("anyone?"))


async def test_endpoint_answering_503_is_skipped(
    openai_server: OpenAIServer, tiny_engine: GemmaEngine
) -> None:
    stopped = Worker(lambda: SequentialEngine(tiny_engine))
    await stopped.start()
    await stopped.stop()  # its server answers 503 to every completion
    config = ServerConfig(openai_server.model_name, api_key=openai_server.api_key)
    runner, port = await start_site(create_app(stopped, config), "127.0.0.1", 0)
    stopped_url = f"http://127.0.0.1:{port}/v1"
    try:
        async with remote_worker(openai_server, stopped_url, openai_server.base_url) as worker:
            events = await collect(worker, question("one"))
            assert isinstance(events[-1], Finished)
        async with remote_worker(openai_server, stopped_url) as worker:
            with pytest.raises(InferenceError, match="HTTP 503"):
                await collect(worker, question("two"))
    finally:
        await runner.cleanup()


async def test_concurrency_cap_per_endpoint_is_kept(openai_server: OpenAIServer) -> None:
    openai_server.max_in_flight = 0
    async with remote_worker(openai_server, max_concurrency_per_endpoint=1) as worker:
        results = await asyncio.gather(
            *(collect(worker, question(f"q{i}", max_new_tokens=6)) for i in range(3))
        )
    assert all(isinstance(events[-1], Finished) for events in results)
    assert sorted(events[0].position for events in results) == [1, 1, 2]
    assert openai_server.max_in_flight == 1


async def test_queue_bound_and_stop(openai_server: OpenAIServer) -> None:
    async with remote_worker(openai_server, max_concurrency_per_endpoint=1, max_queue=1) as worker:
        running = worker.submit(question("long", max_new_tokens=200))
        assert await anext(running) == Queued(1)
        waiting = worker.submit(question("next"))
        assert await anext(waiting) == Queued(1)
        assert (worker.num_running, worker.queue_depth) == (1, 1)
        with pytest.raises(QueueFull):
            await anext(worker.submit(question("one too many")))
        stopping = asyncio.create_task(worker.stop())
        with pytest.raises(WorkerStopped):
            await anext(waiting)
        await running.aclose()  # leaving the stream ends the request at the server
        await stopping
        assert worker.num_running == 0 and not worker.is_alive
        with pytest.raises(WorkerStopped):
            await anext(worker.submit(question("after stop")))


async def test_refused_request_is_an_inference_error(openai_server: OpenAIServer) -> None:
    async with remote_worker(openai_server, api_key="wrong") as worker:
        with pytest.raises(InferenceError, match="HTTP 401"):
            await collect(worker, question("hi"))


async def collect(worker: RemoteWorker, request: Request) -> list:
    return [event async for event in worker.submit(request)]
