"""The vision tower's output per photo kept for photos seen again (photo_cache): the cache
itself, and a follow-up's prefill on the tiny checkpoint (CPU) that runs the tower only for
its new photo and gives the same logits as recomputing both."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from inference import GemmaEngine, Request, Turn, normalize_image
from inference.images import photo_key
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig
from inference.runtime.gemma4 import vision
from inference.runtime.photo_cache import MAX_IDLE_S, PhotoCache
from tests.conftest import png_bytes
from tools.samples import draw_menu, draw_sign


def test_least_recently_used_photos_leave_first_within_the_budget() -> None:
    cache = PhotoCache(max_bytes=3 * 40)  # three photos of 10 float32 values
    photos = {name: torch.full((2, 5), float(n)) for n, name in enumerate("abcd")}
    for name in "abc":
        cache.put(name.encode(), photos[name])
    assert cache.get(b"a") is not None  # a is used again: b is now the oldest
    cache.put(b"d", photos["d"])
    assert cache.get(b"b") is None and cache.num_bytes == 120
    assert torch.equal(cache.get(b"d"), photos["d"])
    cache.put(None, photos["a"])  # a photo without a key is not kept
    cache.put(b"e", torch.zeros(200))  # nor one larger than the whole budget
    assert cache.stats() == {"photos": 3, "bytes": 120, "hits": 2, "misses": 1}


def test_a_kept_photo_is_a_copy_not_a_view_of_its_batch() -> None:
    batch = torch.arange(12.0).view(3, 4)
    cache = PhotoCache(max_bytes=1000)
    cache.put(b"x", batch[1])
    batch.zero_()
    assert cache.get(b"x").tolist() == [4.0, 5.0, 6.0, 7.0]


def test_one_photo_one_key_whenever_it_arrives() -> None:
    """The bot normalizes a photo when it arrives and again when a follow-up carries it:
    the same key both times, another photo another key."""
    sent = png_bytes(draw_sign(640, 480))
    sign = normalize_image(sent)
    assert photo_key(sign, 280) == photo_key(normalize_image(sent), 280)
    assert photo_key(sign, 280) != photo_key(normalize_image(png_bytes(draw_menu(360, 480))), 280)
    assert photo_key(sign, 280) != photo_key(sign, 140)  # another budget, other soft tokens


@pytest.fixture(scope="module")
def engines(tiny_engine: GemmaEngine):
    runtime = RuntimeConfig(max_slots=3, max_seq_len=2048, cuda_graphs=False)
    made = [BatchEngine(tiny_engine, runtime),
            BatchEngine(tiny_engine, replace(runtime, photo_cache_bytes=0))]  # fmt: skip
    yield made
    for engine in made:
        engine.close()


def test_a_follow_up_runs_the_tower_for_its_new_photo_only(engines, monkeypatch) -> None:
    sign = normalize_image(png_bytes(draw_sign(640, 480)))
    menu = normalize_image(png_bytes(draw_menu(360, 480, seed=2)))
    first = Request(language="de", images=(sign,))
    follow_up = Request(language="de", question="and this?", images=(menu,),
                        history=(Turn("user", "what is this?", images=(sign,)),
                                 Turn("model", "An exit sign.")))  # fmt: skip
    computed: list[int] = []
    original = vision.photo_embeddings

    def counted(model, pixels, positions, counts):
        computed.append(len(counts))
        return original(model, pixels, positions, counts)

    monkeypatch.setattr(vision, "photo_embeddings", counted)
    logits = []
    for engine in engines:  # with the photo cache, then without
        engine.runner.prefill([engine.prepare(first).inputs], [0])
        seq = engine.prepare(follow_up)
        logits.append(engine.runner.prefill([seq.inputs], [1]))
    # with: the sign once, then only the menu; without: the sign again with the menu
    assert computed == [1, 1, 1, 2]
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-4)
    assert engines[0].runner.photos.stats()["hits"] == 1


def test_one_photo_in_several_prompts_of_a_prefill_runs_once(engines, monkeypatch) -> None:
    photo = normalize_image(png_bytes(draw_menu(360, 480, seed=7)))
    computed: list[int] = []
    original = vision.photo_embeddings
    monkeypatch.setattr(vision, "photo_embeddings", lambda model, pixels, positions, counts: (
        computed.append(len(counts)) or original(model, pixels, positions, counts)))  # fmt: skip
    engine = engines[1]  # no cache: the prefill itself shares the work
    seqs = [engine.prepare(Request(language=lang, images=(photo,))) for lang in ("de", "fr")]
    logits = engine.runner.prefill([seq.inputs for seq in seqs], [0, 1])
    assert computed == [1] and logits.shape[0] == 2


def test_a_photo_leaves_when_unused_for_max_idle_seconds() -> None:
    now = [1000.0]
    cache = PhotoCache(max_bytes=1000, clock=lambda: now[0])
    cache.put(b"old", torch.zeros(4))
    cache.put(b"used", torch.zeros(4))
    now[0] += MAX_IDLE_S - 1
    assert cache.get(b"used") is not None  # used again: its idle time starts over
    now[0] += 2
    assert cache.get(b"old") is None and cache.stats()["photos"] == 1
    assert cache.get(b"used") is not None and cache.num_bytes == 16


def test_forget_drops_every_photo_a_request_of_the_owner_carried() -> None:
    cache = PhotoCache(max_bytes=1000)
    for key in (b"mine", b"shared", b"theirs", b"nobodys"):
        cache.put(key, torch.zeros(4))
    for key, owner in ((b"mine", "a"), (b"shared", "a"), (b"shared", "b"), (b"theirs", "b"),
                       (b"nobodys", ""), (b"not kept", "a")):  # fmt: skip
        cache.own(key, owner)
    assert cache.owners(b"shared") == {"a", "b"} and cache.owners(b"nobodys") == set()
    cache.forget("a")
    assert cache.get(b"mine") is None and cache.get(b"shared") is None
    assert cache.owners(b"theirs") == {"b"} and cache.num_bytes == 32
    cache.forget("")  # "" is nobody in particular: nothing is theirs
    assert cache.stats()["photos"] == 2
