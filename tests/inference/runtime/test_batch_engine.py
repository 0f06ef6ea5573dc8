"""The batching engine on the tiny checkpoint (CPU): greedy tokens must equal plain
generate() for requests of different lengths, with images, joining at different steps."""

from __future__ import annotations

import io

import pytest
import torch

from inference import Finished, GemmaEngine, Request, Sampling, Turn, normalize_image
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import vision
from inference.runtime.kv_cache import SlotKVCache
from inference.runtime.model_runner import attend_length_buckets, layer_specs, pinned
from inference.runtime.sequence import Status
from tools.samples import draw_menu, draw_sign

GREEDY = Sampling(temperature=0.0)


def jpeg(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return normalize_image(buffer.getvalue())


@pytest.fixture(
    scope="module",
    params=[
        "fused norms",
        "plain norms",
        "transformers' layers",
        "compiled layer regions",
        "each step read back before the next",
        "attended length in steps of 32",
        "no prefix cache",
        "transformers' vision tower and photo merge",
    ],
)
def batch_engine(request, tiny_engine: GemmaEngine):
    runtime = RuntimeConfig(
        max_slots=3,
        max_seq_len=1024,
        max_prefill_seqs=2,
        cuda_graphs=False,
        # dynamo traces the regions as on a GPU; the eager backend needs no C++ compiler
        compile_layers="eager" if request.param == "compiled layer regions" else False,
        prefix_cache_tokens=0 if request.param == "no prefix cache" else 4096,
    )
    paths = EnginePaths(
        fused_norms=request.param == "fused norms",
        own_layers=request.param != "transformers' layers",
        overlap_steps=request.param != "each step read back before the next",
        # sequences cross from one attended length to the next while they decode
        attend_lengths=tuple(range(32, 1024, 32)) if "32" in request.param else None,
        packed_photos="vision tower" not in request.param,
    )
    engine = BatchEngine(tiny_engine, runtime, paths)
    yield engine
    engine.close()


def requests() -> list[tuple[int, Request]]:
    """(step at which it arrives, request)."""
    sign, menu = jpeg(draw_sign(640, 480)), jpeg(draw_menu(360, 480, seed=2))
    return [
        (0, Request(language="de", images=(sign,), max_new_tokens=40, sampling=GREEDY)),
        (0, Request(language="fr", question="Wo ist der Bahnhof?", max_new_tokens=9,
                    sampling=GREEDY)),
        (3, Request(language="ja", question="Which dish has no pork?", images=(menu,),
                    max_new_tokens=30, sampling=GREEDY)),
        (5, Request(language="en", question="and dessert?", max_new_tokens=25, sampling=GREEDY,
                    history=(Turn("user", "what is this?", images=(sign,)),
                             Turn("model", "An exit sign.")))),
        (6, Request(language="ar", question="?", max_new_tokens=12, sampling=GREEDY)),
        (7, Request(language="en", question="and this one?", images=(menu,), max_new_tokens=10,
                    sampling=GREEDY, history=(Turn("user", "what is this?", images=(sign,)),
                                              Turn("model", "An exit sign.")))),  # 2 photos
        (8, Request(language="it", question="which page has desserts?", max_new_tokens=6,
                    sampling=GREEDY, images=album_pages(4))),  # an album: 4 photos, one turn
    ]  # fmt: skip


def album_pages(count: int) -> tuple[bytes, ...]:
    """Pages of an album, of different sizes and orientations as phones send them."""
    sizes = [(640, 480), (360, 480), (480, 640), (640, 360), (500, 500)]
    return tuple(
        jpeg((draw_menu if n % 2 else draw_sign)(*sizes[n % len(sizes)], seed=n))
        for n in range(count)
    )


def serve(engine: BatchEngine, arrivals: list[tuple[int, Request]]) -> dict[int, list]:
    """Each request joins at its step; steps run until all are done → events by request."""
    results: dict[int, list] = {i: [] for i in range(len(arrivals))}
    step = 0
    pending = list(enumerate(arrivals))
    while pending or engine.num_active:
        while pending and pending[0][1][0] <= step:
            index, (_, request) = pending.pop(0)
            engine.add(engine.prepare(request), results[index].append, lambda: False)
        if engine.num_active:
            engine.step()
        step += 1
        assert step < 500
    return results


def test_greedy_tokens_equal_generate(batch_engine: BatchEngine, monkeypatch) -> None:
    photo_prefills, embeddings = [], vision.photo_embeddings

    def recording(*args):
        photo_prefills.append(args[3])
        return embeddings(*args)

    monkeypatch.setattr(vision, "photo_embeddings", recording)
    arrivals = requests()
    results = serve(batch_engine, arrivals)
    # the photos' soft tokens were merged by the runner (patch counts from the CPU), or by
    # transformers when the tower runs as it ships
    if batch_engine.paths.packed_photos:
        assert len(photo_prefills) >= 2
    else:
        assert photo_prefills == []
    reference = batch_engine.base
    for index, (_, request) in enumerate(arrivals):
        finished = results[index][-1]
        assert isinstance(finished, Finished)
        expected = reference.generate(request, lambda event: None, lambda: False)
        assert finished.token_ids == expected.token_ids, f"request {index} differs"
        assert finished == expected
        text = "".join(e.text for e in results[index][:-1] if not e.is_thought)
        assert text.strip() == finished.text
    assert batch_engine.num_active == 0
    assert batch_engine.scheduler.running == []
    # all six share the system prompt's rules: one prefill of it, then the rest after its KV
    prefixes = batch_engine.runner.prefixes.stats()
    if batch_engine.runtime.prefix_cache_tokens:
        assert prefixes["entries"] == 1 and prefixes["hits"] >= 3
    else:
        assert prefixes["entries"] == prefixes["hits"] == 0


def test_a_slot_freed_in_the_step_that_admits_a_prompt_goes_to_it(
    batch_engine: BatchEngine,
) -> None:
    """The running decode is launched before the prefill: the first sequence's last token
    frees slot 0 in the very step that admits the second, which then moves into slot 0."""
    first = Request(language="de", question="Bahnhof?", max_new_tokens=3, sampling=GREEDY)
    second = Request(language="en", images=(jpeg(draw_sign(640, 480)),), max_new_tokens=8,
                     sampling=GREEDY)  # fmt: skip
    results: list[list] = [[], []]
    batch_engine.add(batch_engine.prepare(first), results[0].append, lambda: False)
    batch_engine.step()  # prefill: token 1
    batch_engine.step()  # decode: token 2
    admitted = batch_engine.prepare(second)
    batch_engine.add(admitted, results[1].append, lambda: False)
    batch_engine.step()  # decode: token 3, the first one's last; then the second's prefill
    assert admitted.status is Status.RUNNING and admitted.slot == 0
    while batch_engine.num_active:
        batch_engine.step()
    for request, events in zip((first, second), results, strict=True):
        expected = batch_engine.base.generate(request, lambda event: None, lambda: False)
        assert events[-1].token_ids == expected.token_ids


def test_cancelled_request_leaves_and_frees_its_slot(batch_engine: BatchEngine) -> None:
    cancelled = {"flag": False}
    events: list = []
    batch_engine.add(
        batch_engine.prepare(
            Request(language="en", question="long", max_new_tokens=200, sampling=GREEDY)
        ),
        events.append,
        lambda: cancelled["flag"],
    )
    batch_engine.step()
    batch_engine.step()
    cancelled["flag"] = True
    batch_engine.step()
    assert events[-1].finish_reason == "cancelled"
    assert batch_engine.num_active == 0


def test_sampling_is_seeded_and_respects_limits(tiny_engine: GemmaEngine) -> None:
    def run() -> tuple[int, ...]:
        engine = BatchEngine(tiny_engine, RuntimeConfig(max_slots=2, max_seq_len=1024, seed=7))
        events: list = []
        prepared = engine.prepare(Request(language="en", question="hi", max_new_tokens=16))
        engine.add(prepared, events.append, lambda: False)
        while engine.num_active:
            engine.step()
        engine.close()
        return events[-1].token_ids

    first = run()
    assert first == run()
    assert 1 <= len(first) <= 16


def test_prompt_longer_than_the_context_is_refused(batch_engine: BatchEngine) -> None:
    from inference import InferenceError

    with pytest.raises(InferenceError, match="too long"):
        batch_engine.prepare(Request(language="en", question="word " * 1200))


class FaultyPrefill:
    """Fault injection: the real prefill, except that it raises `error` when `fails(inputs)`."""

    def __init__(self, engine: BatchEngine, fails, error: Exception) -> None:
        self.real, self.fails, self.error, self.calls = engine.runner.prefill, fails, error, []
        engine.runner.prefill = self

    def __call__(self, inputs, slots, prefix=()):
        self.calls.append(len(inputs))
        if self.fails(inputs):
            raise self.error
        return self.real(inputs, slots, prefix)


def run_all(engine: BatchEngine, requests: list[Request]) -> list[list]:
    results: list[list] = [[] for _ in requests]
    for request, events in zip(requests, results, strict=True):
        engine.add(engine.prepare(request), events.append, lambda: False)
    while engine.num_active:
        engine.step()
    return results


@pytest.fixture
def plain_engine(tiny_engine: GemmaEngine):
    engine = BatchEngine(tiny_engine, RuntimeConfig(max_slots=4, max_seq_len=1024))
    yield engine
    engine.close()


def test_the_kv_cache_budget_decides_how_many_sequences_decode_together(
    tiny_engine: GemmaEngine,
) -> None:
    model = tiny_engine.model
    sizes = {"max_seq_len": 1024, "window": model.config.get_text_config().sliding_window,
             "dtype_size": model.dtype.itemsize}  # fmt: skip
    two_slots = SlotKVCache.bytes_needed(layer_specs(model), max_slots=2, **sizes)
    engine = BatchEngine(tiny_engine, RuntimeConfig(max_slots=4, max_seq_len=1024,
                                                    kv_cache_bytes=two_slots + 1000))  # fmt: skip
    try:
        assert engine.max_slots == engine.scheduler.max_slots == 2
        assert engine.runner.cache.keys[0].shape[0] == 3  # and the scratch slot
        events = run_all(engine, [Request(language="en", question=f"q{i}", max_new_tokens=3)
                                  for i in range(3)])  # fmt: skip
        assert all(isinstance(e[-1], Finished) for e in events)  # the third waited its turn
    finally:
        engine.close()
    roomy = BatchEngine(tiny_engine, RuntimeConfig(max_slots=4, max_seq_len=1024,
                                                   kv_cache_bytes=100 * two_slots))  # fmt: skip
    assert roomy.max_slots == 4  # never more than max_slots
    roomy.close()
    with pytest.raises(ValueError, match="holds no slot"):
        BatchEngine(tiny_engine, RuntimeConfig(max_seq_len=1024, kv_cache_bytes=1000))


def test_out_of_memory_in_a_prefill_retries_it_in_halves(plain_engine: BatchEngine) -> None:
    import torch

    faulty = FaultyPrefill(plain_engine, lambda inputs: len(inputs) > 1, torch.OutOfMemoryError())
    questions = ["menu?", "where is the exit?", "price?"]
    asked = [
        Request(language="en", question=q, max_new_tokens=6, sampling=GREEDY) for q in questions
    ]
    results = run_all(plain_engine, asked)
    assert faulty.calls == [3, 1, 2, 1, 1]  # 3 → 1 + 2 → 1 + 1
    for request, events in zip(asked, results, strict=True):
        expected = plain_engine.base.generate(request, lambda event: None, lambda: False)
        assert events[-1] == expected


def test_a_failing_prefill_fails_only_its_requests(plain_engine: BatchEngine) -> None:
    from inference import InferenceError

    def has_image(inputs) -> bool:
        return any("pixel_values" in item for item in inputs)

    running = Request(language="en", question="long answer", max_new_tokens=12, sampling=GREEDY)
    events: list = []
    plain_engine.add(plain_engine.prepare(running), events.append, lambda: False)
    plain_engine.step()  # the first request is decoding when the bad one arrives
    FaultyPrefill(plain_engine, has_image, RuntimeError("kernel failed"))
    bad = Request(language="en", images=(jpeg(draw_sign(320, 240)),), max_new_tokens=5)
    [bad_events] = run_all(plain_engine, [bad])
    assert isinstance(bad_events[-1], InferenceError)
    assert isinstance(events[-1], Finished)
    expected = plain_engine.base.generate(running, lambda event: None, lambda: False)
    assert events[-1] == expected
    assert plain_engine.scheduler.running == []


def test_after_a_failed_step_the_engine_forgets_cached_prefixes_and_serves_again(
    plain_engine: BatchEngine,
) -> None:
    from inference import InferenceError

    request = Request(language="en", question="exit?", max_new_tokens=5, sampling=GREEDY)
    events: list = []
    plain_engine.add(plain_engine.prepare(request), events.append, lambda: False)
    plain_engine.step()
    assert plain_engine.runner.prefixes.stats()["entries"] == 1
    plain_engine.fail_all(InferenceError("generation failed: RuntimeError"))
    assert isinstance(events[-1], InferenceError)
    assert plain_engine.runner.prefixes.stats()["entries"] == 0 and plain_engine.num_active == 0
    [again] = run_all(plain_engine, [request])
    assert again[-1] == plain_engine.base.generate(request, lambda event: None, lambda: False)


def test_engine_serves_without_compiled_layers_when_compiling_fails(
    tiny_engine: GemmaEngine,
) -> None:
    """Fault injection: a compiler backend that fails, as Triton does on a host without a C
    compiler. The engine falls back to the same layers uncompiled and answers exactly."""
    compiled: list[int] = []

    def broken_backend(graph, example_inputs):
        compiled.append(len(example_inputs))
        raise RuntimeError("no C compiler found")

    runtime = RuntimeConfig(max_slots=2, max_seq_len=1024, compile_layers=broken_backend)
    engine = BatchEngine(tiny_engine, runtime)
    try:
        assert compiled, "the backend was never tried"
        request = Request(language="en", question="exit?", max_new_tokens=6, sampling=GREEDY)
        [events] = run_all(engine, [request])
        expected = tiny_engine.generate(request, lambda event: None, lambda: False)
        assert events[-1] == expected
    finally:
        engine.close()


def test_a_stop_token_ends_the_answer_and_its_extra_row_is_dropped(
    plain_engine: BatchEngine,
) -> None:
    """Tokens are read back one step late, so a stopping sequence has already decoded one
    more row; that row must not reach the answer, and the freed slot must serve the next."""
    asked = [
        Request(language="en", question=q, max_new_tokens=12, sampling=GREEDY)
        for q in ("menu?", "where is the exit?", "price?", "is it open?", "tickets?")
    ]
    full = [plain_engine.base.generate(r, lambda event: None, lambda: False) for r in asked]
    stop = full[0].token_ids[4]  # pretend the model ends its turn with this token
    plain_engine.stop_ids = {stop}
    results = run_all(plain_engine, asked)
    for expected, events in zip(full, results, strict=True):
        tokens = list(expected.token_ids)
        cut = tokens.index(stop) + 1 if stop in tokens else len(tokens)
        finished = events[-1]
        assert isinstance(finished, Finished)
        assert list(finished.token_ids) == tokens[:cut]
        assert finished.finish_reason == ("stop" if stop in tokens else expected.finish_reason)
    assert results[0][-1].finish_reason == "stop" and len(results[0][-1].token_ids) == 5
    assert plain_engine.num_active == 0 and plain_engine.scheduler.running == []


def test_a_single_slot_engine_warms_up_its_compiled_regions(tiny_engine: GemmaEngine) -> None:
    """The prefill warm-up fits its batches to the slots, so it does not fail (and fall
    back to uncompiled layers) on a small engine."""
    from structlog.testing import capture_logs

    runtime = RuntimeConfig(max_slots=1, max_seq_len=1024, compile_layers="eager")
    with capture_logs() as logs:
        engine = BatchEngine(tiny_engine, runtime)
    engine.close()
    events = [entry["event"] for entry in logs]
    assert "prefill_warmed_up" in events and "compiled_layers_failed" not in events


def test_a_step_attending_to_a_shorter_length_gives_the_same_logits(
    tiny_engine: GemmaEngine,
) -> None:
    engine = BatchEngine(tiny_engine, RuntimeConfig(max_slots=2, max_seq_len=1024,
                                                    cuda_graphs=False))  # fmt: skip
    runner = engine.runner
    prepared = [engine.prepare(request) for _, request in requests()[1:3]]
    runner.prefill([seq.inputs for seq in prepared], [0, 1])
    runner.store_tokens([0, 1], torch.tensor([5, 7]))
    positions = [seq.num_prompt_tokens for seq in prepared]
    runner.attend_lengths = [1024]
    full = runner.decode(positions)
    runner.attend_lengths = list(range(32, 1025, 32))
    short = runner.decode(positions)  # the same step again: it writes the same KV
    assert runner.cache.attend_len == next(n for n in range(32, 1025, 32) if n > max(positions))
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)
    engine.close()


def test_attended_lengths_grow_by_a_quarter_so_a_photo_answer_reads_little_padding() -> None:
    assert attend_length_buckets(4096, None) == [512, 768, 1024, 1280, 1792, 2304, 3072,
                                                 3840, 4096]  # fmt: skip
    assert attend_length_buckets(4096, (100, 5000)) == [100, 4096]  # and the longest


def test_a_tensor_that_cannot_be_pinned_is_used_as_it_is() -> None:
    tensor = torch.arange(6.0)
    out = pinned(tensor)  # here (no GPU) pinning is refused; on a GPU host it is pinned
    assert out is tensor or (out.is_pinned() and torch.equal(out, tensor))


def test_fp8_sliding_kv_serves_and_keeps_logits_near_the_full_precision_ones(
    tiny_engine: GemmaEngine,
) -> None:
    steps, fed = {}, []  # both runs are fed the full-precision run's tokens
    for fp8 in (False, True):
        runtime = RuntimeConfig(max_slots=3, max_seq_len=1024, max_prefill_seqs=2,
                                cuda_graphs=False, fp8_kv_cache=fp8)  # fmt: skip
        engine = BatchEngine(tiny_engine, runtime)
        runner = engine.runner
        seq = engine.prepare(requests()[0][1])  # a photo
        logits = [runner.prefill([seq.inputs], [0], seq.prefix)]
        for step in range(5):
            if not fp8:
                fed.append(logits[-1].argmax(-1))
            runner.store_tokens([0], fed[step])
            logits.append(runner.decode([seq.num_prompt_tokens + step]))
        steps[fp8] = torch.cat(logits)
        sliding = [spec.is_sliding for spec in runner.cache.layers]
        kinds = {(s, k.dtype) for s, k in zip(sliding, runner.cache.keys, strict=True)}
        expected = torch.float8_e4m3fn if fp8 else tiny_engine.model.dtype
        assert kinds == {(True, expected), (False, tiny_engine.model.dtype)}
        if fp8:  # and it serves the mixed arrivals to the end
            results = serve(engine, requests())
            assert all(isinstance(events[-1], Finished) for events in results.values())
        engine.close()
    full, fp8 = steps[False], steps[True]
    finite = full.isfinite()
    assert torch.equal(finite, fp8.isfinite())
    # random tiny weights: FP8 keys and values move its logits by ~5% on average
    change = (fp8 - full)[finite].abs().mean() / full[finite].abs().mean()
    assert change < 0.15


def test_logits_fall_back_to_eager_when_compiling_them_fails(tiny_engine: GemmaEngine) -> None:
    """A backend that fails on the logits' small function only: the engine's own fallback
    (the prefill warm-up meets the failure, as a graph capture would hide it) gives the
    uncompiled layers and eager logits, and the answer is exact; a working backend
    compiles them."""
    from inference.runtime.model_runner import finished_logits

    failed: list[str] = []

    def logits_fail(graph, example_inputs):
        if any("index_fill" in str(node.target) for node in graph.graph.nodes):
            failed.append("logits")
            raise RuntimeError("no C compiler found")
        return graph.forward

    engine = BatchEngine(tiny_engine, RuntimeConfig(max_slots=2, max_seq_len=1024,
                                                    compile_layers=logits_fail))  # fmt: skip
    try:
        assert failed and engine.runner._finish_logits is finished_logits
        request = Request(language="en", question="exit?", max_new_tokens=6, sampling=GREEDY)
        [events] = run_all(engine, [request])
        assert events[-1] == tiny_engine.generate(request, lambda event: None, lambda: False)
    finally:
        engine.close()
    working = BatchEngine(tiny_engine, RuntimeConfig(max_slots=2, max_seq_len=1024,
                                                     compile_layers="eager"))  # fmt: skip
    try:
        runner = working.runner
        assert runner._finish_logits is not finished_logits
        logits = torch.randn(2, tiny_engine.model.lm_head.out_features)
        torch.testing.assert_close(
            runner._finish_logits(logits, runner.softcap, runner.suppressed),
            finished_logits(logits, runner.softcap, runner.suppressed),
        )
    finally:
        working.close()
