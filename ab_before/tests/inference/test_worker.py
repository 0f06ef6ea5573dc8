"""The worker with the real tiny Gemma 4 engine on CPU."""

from __future__ import annotations

import asyncio

import pytest
import torch

from inference import (
    Delta,
    EngineConfig,
    Finished,
    GemmaEngine,
    InferenceError,
    Queued,
    QueueFull,
    Request,
    RuntimeConfig,
    Sampling,
    Started,
    Worker,
    WorkerStopped,
    create_engine,
    normalize_image,
)

GREEDY = Sampling(temperature=0.0)


RUNTIME = RuntimeConfig(max_slots=1, max_seq_len=2048)


@pytest.fixture(params=["batch", "generate"])
async def worker(request, engine_config: EngineConfig):
    runtime = RUNTIME if request.param == "batch" else None
    worker = Worker(lambda: create_engine(engine_config, runtime), max_queue=4)
    await worker.start()
    yield worker
    await worker.stop()


async def collect(worker: Worker, request: Request) -> list:
    return [event async for event in worker.submit(request)]


async def test_streams_events_in_order_and_matches_plain_generate(
    worker: Worker, tiny_engine: GemmaEngine, sign_png: bytes
) -> None:
    request = Request(
        language="de", image=normalize_image(sign_png), max_new_tokens=24, sampling=GREEDY
    )
    events = await collect(worker, request)
    assert isinstance(events[0], Queued) and events[0].position == 1
    assert isinstance(events[1], Started)
    finished = events[-1]
    assert isinstance(finished, Finished)
    deltas = [e for e in events if isinstance(e, Delta) and not e.is_thought]
    assert "".join(d.text for d in deltas).strip() == finished.text
    assert finished.num_output_tokens == 24 or finished.finish_reason == "stop"

    # the same text as transformers' own generate() on the same inputs
    inputs = tiny_engine.prepare_inputs(request)
    with torch.inference_mode():
        reference = tiny_engine.model.generate(
            **inputs, max_new_tokens=24, do_sample=False, **tiny_engine.generation_kwargs
        )
    new_tokens = reference[0, inputs["input_ids"].shape[1] :].tolist()
    splitter = tiny_engine.make_splitter()
    for token in new_tokens:
        splitter.push(token)
    assert (finished.text, finished.thought) == (splitter.answer, splitter.thought)
    assert finished.num_output_tokens == len(new_tokens)
    assert finished.num_prompt_tokens == inputs["input_ids"].shape[1]
    assert finished.num_prompt_tokens > 70  # the image's soft tokens are in the prompt


async def test_queue_positions_bounds_and_cancellation(worker: Worker) -> None:
    long = Request(language="en", question="long", max_new_tokens=400, sampling=GREEDY)
    first = worker.submit(long)
    assert await anext(first) == Queued(1)
    assert isinstance(await anext(first), Started)
    waiting = [worker.submit(Request(language="en", question=f"q{i}", max_new_tokens=2))
               for i in range(4)]  # fmt: skip
    positions = [(await anext(stream)).position for stream in waiting]
    assert positions == [1, 2, 3, 4]
    with pytest.raises(QueueFull):
        await anext(worker.submit(Request(language="en", question="one too many")))
    # leaving a stream cancels its request: the long one stops early
    await first.aclose()
    events = [e async for e in waiting[0]]
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    for stream in waiting[1:]:
        assert isinstance([e async for e in stream][-1], Finished)


async def test_one_failing_request_does_not_stop_the_worker(worker: Worker) -> None:
    broken = Request(language="en", image=b"not a jpeg at all", max_new_tokens=4)
    with pytest.raises(InferenceError):
        await collect(worker, broken)
    events = await collect(
        worker, Request(language="en", question="still there?", max_new_tokens=4)
    )
    assert isinstance(events[-1], Finished)


async def test_stop_fails_waiting_requests(engine_config: EngineConfig) -> None:
    worker = Worker(lambda: create_engine(engine_config, RUNTIME), max_queue=4)
    await worker.start()
    running = worker.submit(Request(language="en", question="a", max_new_tokens=200))
    await anext(running)
    waiting = worker.submit(Request(language="en", question="b", max_new_tokens=2))
    await anext(waiting)
    stopping = asyncio.create_task(worker.stop())
    with pytest.raises(WorkerStopped):
        await anext(waiting)
    await running.aclose()
    await stopping
    with pytest.raises(WorkerStopped):
        await anext(worker.submit(Request(language="en", question="c")))


async def test_missing_model_fails_at_start(tmp_path) -> None:
    from inference import ModelNotFound

    worker = Worker(lambda: create_engine(EngineConfig(model_path=tmp_path), RUNTIME))
    with pytest.raises(ModelNotFound, match="tiny-checkpoint"):
        await worker.start()
