"""An album's pages: several photos in one user turn, through the prompt, the OpenAI wire
format and the engine, within the soft-token budget of one sequence."""

from __future__ import annotations

import pytest

from inference import EngineConfig, GemmaEngine, ImageRejected, Request, Sampling, Turn
from inference.engine import PHOTOS_AT_FULL_BUDGET
from inference.openai_wire import (
    RequestLimits,
    chat_payload,
    check_completion_body,
    read_completion_call,
)
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig
from tests.conftest import OpenAIServer, small_photo
from tests.inference.runtime.test_batch_engine import album_pages
from tests.inference.test_openai_wire import LIMITS
from tests.inference.test_remote import remote_worker

GREEDY = Sampling(temperature=0.0)


def test_pages_are_images_of_one_user_turn_before_the_task(tiny_engine: GemmaEngine) -> None:
    pages = (b"p1", b"p2", b"p3")
    explain = tiny_engine.build_prompt(Request(language="de", images=pages))
    assert "<|turn>user\n<|image|><|image|><|image|>These 3 photos are pages" in explain.text
    assert "Read all the text on these pages" in explain.text
    assert explain.images == pages
    asked = tiny_engine.build_prompt(Request(language="de", images=pages, question="Vegan?"))
    assert "<|image|><|image|><|image|>The traveller asks about these 3 pages" in asked.text
    assert "this photo" not in asked.text.split("<|turn>user")[-1]
    # a follow-up carries the album's pages in its earlier turn
    history = (Turn("user", "", pages), Turn("model", "A menu."))
    follow_up = tiny_engine.build_prompt(Request(language="de", question="и?", history=history))
    assert follow_up.images == pages and follow_up.text.count("<|image|>") == 3


def test_a_server_gets_every_page(tiny_engine: GemmaEngine) -> None:
    """The OpenAI-compatible path: each page an image part of the one user message, and
    `travelbot serve` takes an album of 10 and renders what the engine renders."""
    pages = tuple(album_pages(10))
    request = Request(language="fr", images=pages, question="Sans porc ?")
    payload = chat_payload(request, model="gemma")
    [user] = [m for m in payload["messages"] if m["role"] == "user"]
    assert [part["type"] for part in user["content"]] == ["image_url"] * 10 + ["text"]
    served = read_completion_call(payload, default_max_tokens=8, image_limits=LIMITS)
    assert tiny_engine.build_prompt(served.request).text == tiny_engine.build_prompt(request).text


@pytest.fixture(scope="module")
def engine_at_280(engine_config: EngineConfig) -> GemmaEngine:
    """The tiny checkpoint at the real model's default budget, 280 soft tokens a photo."""
    config = EngineConfig(model_path=engine_config.model_path, device="cpu", image_soft_tokens=280)
    return GemmaEngine.load(config)


def test_many_pages_get_a_smaller_budget_each(engine_at_280: GemmaEngine) -> None:
    budgets = [engine_at_280.soft_tokens_per_photo(n) for n in range(1, 11)]
    assert budgets == [280] * PHOTOS_AT_FULL_BUDGET + [140] * (10 - PHOTOS_AT_FULL_BUDGET)
    image_token = engine_at_280.tokenizer.image_token_id
    one = engine_at_280.prepare_inputs(Request(language="en", images=album_pages(1)))
    ten = engine_at_280.prepare_inputs(Request(language="en", images=album_pages(10)))
    per_photo = int((one["input_ids"] == image_token).sum())
    assert 140 < per_photo <= 280
    assert int((ten["input_ids"] == image_token).sum()) <= 10 * 140


def test_ten_pages_fit_one_sequence_with_a_full_answer(engine_at_280: GemmaEngine) -> None:
    """10 pages at the default budget, with a question, fit the default 4,096-position
    sequence with room for the default 1,024-token answer; the batch engine's greedy
    tokens for it equal plain generate()'s."""
    request = Request(
        language="de",
        question="Welche Seite hat Desserts?",
        images=album_pages(10),
        history=(Turn("user", "what is this?", (small_photo(),)), Turn("model", "A sign.")),
        max_new_tokens=6,
        sampling=GREEDY,
    )
    runtime = RuntimeConfig(max_slots=1, max_seq_len=4096, cuda_graphs=False)
    engine = BatchEngine(engine_at_280, runtime)
    try:
        seq = engine.prepare(request)
        assert seq.num_prompt_tokens + 1024 <= runtime.max_seq_len, seq.num_prompt_tokens
        events: list = []
        engine.add(seq, events.append, lambda: False)
        while engine.num_active:
            engine.step()
    finally:
        engine.close()
    expected = engine_at_280.generate(request, lambda event: None, lambda: False)
    assert events[-1].token_ids == expected.token_ids


def test_an_albums_images_are_bounded_together() -> None:
    """10 images pass one by one, and all together within `max_images_bytes`: the body a
    server reads stays bounded as with 4 photos at the size limit."""
    pages = album_pages(10)
    payload = chat_payload(Request(language="en", images=pages), model="gemma")
    largest = max(map(len, pages))
    fits = RequestLimits(max_images_bytes=sum(map(len, pages)) + 10)
    assert len(check_completion_body(payload, default_max_tokens=8, limits=fits).messages) == 3
    too_small = RequestLimits(max_images_bytes=largest * 3)
    with pytest.raises(ImageRejected) as info:
        check_completion_body(payload, default_max_tokens=8, limits=too_small)
    assert info.value.reason == "too_large"
    assert RequestLimits().max_body_bytes < 110 * 2**20  # as with 4 images of 20 MB


async def test_a_remote_engine_answers_an_album_as_the_local_one(
    openai_server: OpenAIServer,
) -> None:
    """RemoteWorker → `travelbot serve`: all 10 pages reach the server's prompt (the same
    number of prompt tokens as the local worker's, images expanded), the same tokens."""
    request = Request(language="ja", images=album_pages(10), question="デザートは？",
                      max_new_tokens=6, sampling=GREEDY)  # fmt: skip
    async with remote_worker(openai_server) as worker:
        remote = [event async for event in worker.submit(request)][-1]
    local = [event async for event in openai_server.worker.submit(request)][-1]
    assert (remote.num_prompt_tokens, remote.text) == (local.num_prompt_tokens, local.text)
    one_page = Request(language="ja", images=album_pages(1), question="デザートは？",
                       max_new_tokens=1, sampling=GREEDY)  # fmt: skip
    single = [event async for event in openai_server.worker.submit(one_page)][-1]
    assert remote.num_prompt_tokens > single.num_prompt_tokens + 9 * 60  # 9 more pages' tokens
