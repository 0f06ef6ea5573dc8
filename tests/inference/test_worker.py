"""The worker with the real tiny Gemma 4 engine on CPU."""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

import inference.worker
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
    Turn,
    Worker,
    WorkerStopped,
    create_engine,
    normalize_image,
)
from inference.images import photo_key
from inference.worker import MAX_PREP_THREADS, host_prep_threads
from tests.conftest import small_photo

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
        language="de", images=(normalize_image(sign_png),), max_new_tokens=24, sampling=GREEDY
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
    broken = Request(language="en", images=(b"not a jpeg at all",), max_new_tokens=4)
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


async def test_forget_drops_the_owners_photos_from_the_photo_cache(
    engine_config: EngineConfig,
) -> None:
    """A photo is owned by every traveller whose request carried it, as its photo or in its
    history; forget(owner) drops those (also one shared with another traveller) at once,
    while the engine idles, between the steps of a running request, and after stop."""
    engine = create_engine(engine_config, RuntimeConfig(max_slots=2, max_seq_len=2048))
    worker = Worker(lambda: engine)
    await worker.start()
    photos = {name: normalize_image(small_photo(name)) for name in ("A", "B", "S", "C")}
    kept = engine.runner.photos

    def owners(name: str) -> frozenset[str]:
        return kept.owners(photo_key(photos[name], engine.base.image_soft_tokens))

    def ask(owner: str, photo: str, history: tuple[Turn, ...] = (), tokens: int = 2) -> Request:
        # all its tokens: the one running while forget comes runs on
        return Request(language="en", images=(photos[photo],), history=history, owner=owner,
                       max_new_tokens=tokens, sampling=GREEDY, ignore_stop=True)  # fmt: skip

    for request in (ask("b", "S"), ask("b", "B"),
                    ask("a", "A", history=(Turn("user", "and this?", (photos["S"],)),
                                           Turn("model", "An exit.")))):  # fmt: skip
        await collect(worker, request)
    assert (owners("A"), owners("S"), owners("B")) == ({"a"}, {"a", "b"}, {"b"})

    await worker.forget("a")  # the engine is idle
    assert (owners("A"), owners("S"), owners("B")) == (set(), set(), {"b"})
    assert kept.stats()["photos"] == 1

    misses = kept.misses
    running = worker.submit(ask("c", "C", tokens=200))
    assert isinstance(await anext(running), Queued) and isinstance(await anext(running), Started)
    await worker.forget("c")  # after its prefill (Started comes right before it), mid-run
    assert worker.num_running == 1
    assert isinstance([event async for event in running][-1], Finished)
    assert owners("C") == set() and kept.misses == misses + 1  # kept by the prefill, dropped

    await worker.stop()
    await worker.forget("b")  # the engine thread has ended: forget drops them itself
    assert kept.stats()["photos"] == 0


async def test_forget_returns_on_either_engine(worker: Worker) -> None:
    """The generate() engine keeps nothing: forget has nothing to do, and returns."""
    await collect(worker, Request(language="en", question="hi", owner="a", max_new_tokens=2))
    await worker.forget("a")


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (16, 15), (64, MAX_PREP_THREADS)])
def test_the_prep_pool_is_sized_to_the_host(monkeypatch, cpus: int, threads: int) -> None:
    """A thread a CPU this process may use, less the engine thread's, within bounds."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert host_prep_threads() == threads


async def test_a_burst_is_prefilled_together_and_a_lone_request_at_once(
    engine_config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle engine waits (here up to 30 s) for photos still being prepared when others
    are ready, so a burst is one prefill; a request alone never waits."""
    monkeypatch.setattr(inference.worker, "PREFILL_GATHER_S", 30.0)
    engine = create_engine(engine_config, RuntimeConfig(max_slots=4, max_seq_len=2048))
    prefills: list[int] = []
    prefill = engine.runner.prefill

    def counted(inputs, slots, prefix=()):  # the test watches, the engine runs as ever
        prefills.append(len(inputs))
        return prefill(inputs, slots, prefix)

    engine.runner.prefill = counted
    worker = Worker(lambda: engine, prep_threads=4)
    await worker.start()
    try:
        ask = [Request(language="en", images=(normalize_image(small_photo(f"EXIT {n}")),),
                       max_new_tokens=2, sampling=GREEDY) for n in range(4)]  # fmt: skip
        await asyncio.gather(*(collect(worker, request) for request in ask))
        assert prefills == [4]
        started = asyncio.get_running_loop().time()
        await collect(worker, Request(language="en", question="Exit?", max_new_tokens=2))
        assert asyncio.get_running_loop().time() - started < 20 and prefills == [4, 1]
    finally:
        await worker.stop()
