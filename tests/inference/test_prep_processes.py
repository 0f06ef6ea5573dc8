"""Preparing processes: the same inputs as in a thread, and a process that dies is
replaced, with the tiny checkpoint on the CPU."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import torch
from PIL import Image

import inference.prep_processes
from inference import (
    ChatMessage,
    Finished,
    GemmaEngine,
    ImageRejected,
    InferenceError,
    Request,
    RuntimeConfig,
    Sampling,
    Turn,
    Worker,
    WorkerStopped,
    create_engine,
    normalize_image,
)
from inference.images import ImageLimits
from inference.prep_processes import Preparer, PrepProcesses
from tests.conftest import png_bytes, small_photo
from tools.bench_worker import phone_photos

LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def preparer(tiny_engine: GemmaEngine) -> Preparer:
    """The tiny engine's, with a GPU engine's bfloat16 pixels (numpy has no bfloat16: they
    travel as their bits)."""
    cpu = Preparer.of(tiny_engine)
    return Preparer(cpu.tokenizer, cpu.image_processor, cpu.image_soft_tokens, torch.bfloat16)


@pytest.fixture(scope="module")
def processes(preparer: Preparer):
    processes = PrepProcesses()
    processes.start(2, preparer)
    yield processes
    processes.close()


def requests(photo: bytes, page: bytes) -> list[Request]:
    return [
        Request(language="de", images=(photo,), owner="a"),
        Request(language="ja", images=(photo, page), question="Was kostet das?", think=True),
        Request(language="en", question="and this?", quoted="EXIT",
                history=(Turn("user", "", (page,)), Turn("model", "An exit."))),
        Request(language="en", chat=(ChatMessage("system", "Be short."),
                                     ChatMessage("user", "Read it.", (photo,)))),
    ]  # fmt: skip


def test_a_process_prepares_the_same_inputs_as_a_thread(
    processes: PrepProcesses, preparer: Preparer
) -> None:
    in_thread = preparer.engine()
    phone = phone_photos(1, seed=3)[0]
    photo = processes.normalize(phone, LIMITS)
    assert photo == normalize_image(phone)
    for request in requests(photo, normalize_image(small_photo("EXIT"))):
        inputs, prefix = processes.prepare_with_prefix(request)
        expected_inputs, expected_prefix = in_thread.prepare_with_prefix(request)
        assert prefix == expected_prefix
        assert inputs.keys() == expected_inputs.keys()
        assert "pixel_values" not in inputs or inputs["pixel_values"].dtype == torch.bfloat16
        for name, expected in expected_inputs.items():
            if isinstance(expected, torch.Tensor):
                assert inputs[name].dtype == expected.dtype and torch.equal(inputs[name], expected)
            else:
                assert inputs[name] == expected


def test_a_rejected_photo_keeps_its_reason(processes: PrepProcesses) -> None:
    transparent = png_bytes(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))
    assert processes.normalize(transparent, LIMITS) == normalize_image(transparent)
    cases = {b"not a photo": "not_an_image", b"x" * 2048: "not_an_image",
             png_bytes(Image.new("RGB", (8, 8))): "too_small"}  # fmt: skip
    for data, reason in cases.items():
        with pytest.raises(ImageRejected) as raised:
            processes.normalize(data, LIMITS)
        assert raised.value.reason == reason
    with pytest.raises(ImageRejected) as raised:
        processes.normalize(small_photo(), ImageLimits(max_bytes=100))
    assert raised.value.reason == "too_large"


def children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children()}


def _kill_own_process(*args) -> None:
    """Stands for a photo that kills the process preparing it (a decoder's crash)."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_process_is_replaced_and_what_kills_twice_fails_clearly(
    tiny_engine: GemmaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    others = children()
    processes = PrepProcesses()
    processes.start(1, Preparer.of(tiny_engine))
    try:
        (first,) = children() - others
        os.kill(first, signal.SIGKILL)  # idle, from outside (the OOM killer)
        photo = small_photo()
        assert processes.normalize(photo, LIMITS) == normalize_image(photo)  # tried again
        assert len(children() - others - {first}) == 1

        monkeypatch.setattr(inference.prep_processes, "normalize_image", _kill_own_process)
        with pytest.raises(ImageRejected) as raised:
            processes.normalize(photo, LIMITS)
        assert raised.value.reason == "corrupt"
        monkeypatch.setattr(inference.prep_processes, "_prepare_with_prefix", _kill_own_process)
        with pytest.raises(InferenceError, match="preparing process died on it twice"):
            processes.prepare_with_prefix(Request(language="en", question="hi"))
        monkeypatch.undo()
        request = Request(language="en", images=(normalize_image(photo),))
        _, prefix = processes.prepare_with_prefix(request)
        assert prefix == tiny_engine.prepare_with_prefix(request)[1]
    finally:
        processes.close()
    assert children() == others
    with pytest.raises(WorkerStopped):
        processes.normalize(photo, LIMITS)


async def test_the_worker_prepares_in_processes_and_survives_a_killed_one(
    engine_config, tiny_engine: GemmaEngine
) -> None:
    """Through the Worker as the bot uses it: the same greedy answer as prepared in a
    thread, a killed process costs no request, and stop() ends the processes."""
    engine = create_engine(engine_config, RuntimeConfig(max_slots=2, max_seq_len=2048))
    others = children()
    photo = small_photo("EXIT 3")

    async def answer(worker: Worker) -> Finished:
        image = await worker.normalize_image(photo, LIMITS)
        request = Request(language="de", images=(image,), max_new_tokens=6,
                          sampling=Sampling(temperature=0.0), ignore_stop=True)  # fmt: skip
        return [event async for event in worker.submit(request)][-1]

    in_threads = Worker(lambda: engine, prep_processes=0)
    await in_threads.start()
    expected = await answer(in_threads)
    await in_threads.stop()
    assert children() == others

    worker = Worker(lambda: engine, prep_processes=1)
    await worker.start()
    try:
        assert (await answer(worker)).token_ids == expected.token_ids
        (killed,) = children() - others
        os.kill(killed, signal.SIGKILL)
        assert (await answer(worker)).token_ids == expected.token_ids
        assert len(children() - others - {killed}) == 1  # it was used, and replaced
        with pytest.raises(ImageRejected) as raised:
            await worker.normalize_image(b"not a photo", LIMITS)
        assert raised.value.reason == "not_an_image"
    finally:
        await worker.stop()
    assert children() == others


async def test_beside_the_generate_engine_processes_only_normalize(engine_config) -> None:
    """The generate() engine prepares its own inputs: the processes normalize photos."""
    others = children()
    worker = Worker(lambda: create_engine(engine_config, None), prep_processes=1)
    await worker.start()
    try:
        assert worker.num_prep_processes == 1 and len(children() - others) == 1
        photo = small_photo()
        image = await worker.normalize_image(photo, LIMITS)
        assert image == normalize_image(photo)
        request = Request(language="en", images=(image,), max_new_tokens=2)
        assert isinstance([event async for event in worker.submit(request)][-1], Finished)
    finally:
        await worker.stop()
    assert children() == others and worker.num_prep_processes == 0
