"""The system prompt kept once for all slots in the sliding layers (kv_cache's kept prefix):
slots hold only their own positions, and a decode step over the kept prefix and the own
ring attends as it would over whole slots."""

from __future__ import annotations

import pytest
import torch

from inference import EngineConfig, GemmaEngine, Request
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import fast_ops
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kv_cache import LayerSpec, SlotKVCache
from inference.runtime.model_runner import attend_length_buckets, own_lengths
from tests.conftest import load_with_wide_window, png_bytes
from tools.samples import draw_menu, draw_sign

WINDOW, PREFIX = 16, 5


def make_cache(capacity: int) -> SlotKVCache:
    layers = [LayerSpec(True, 2, 4), LayerSpec(False, 1, 8)]
    return SlotKVCache(layers, max_slots=4, max_seq_len=40, window=WINDOW,
                       dtype=torch.float32, device=torch.device("cpu"),
                       prefix_capacity=capacity)  # fmt: skip


def prompts(lengths: list[int], seed: int) -> tuple[list, list, list]:
    """Whole prompts' keys and values per layer ([rows, H, width, D]), all starting with
    the same PREFIX positions, and that prefix's (keys, values) [1, H, P, D] per layer."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    shapes = ((2, 4), (1, 8))  # (heads, head size) of a sliding and a global layer
    keys = [torch.randn(len(lengths), h, width, d, generator=generator) for h, d in shapes]
    values = [torch.randn(k.shape, generator=generator) for k in keys]
    for layer in (*keys, *values):
        layer[1:, :, :PREFIX] = layer[:1, :, :PREFIX]
    prefix = [(k[:1, :, :PREFIX], v[:1, :, :PREFIX]) for k, v in zip(keys, values, strict=True)]
    return keys, values, prefix


@pytest.mark.parametrize("apart", [False, True])
def test_slots_after_the_kept_prefix_hold_only_their_own_positions(apart: bool) -> None:
    lengths = [12, 9, 25]  # the last one's own positions pass the window
    keys, values, prefix = prompts(lengths, seed=0)
    cache, ids = make_cache(capacity=8), tuple(range(PREFIX))
    stored_keys, stored_values = keys, values
    if apart:  # the prefill kept the prefix apart: its layers begin after it
        stored_keys, stored_values = (
            [t[:, :, PREFIX:] for t in layers] for layers in (keys, values)
        )
    cache.store_prompts([3, 0, 1], stored_keys, stored_values, lengths, prefix, apart=apart,
                        prefix_ids=ids)  # fmt: skip
    assert cache.prefix_ids == ids and [cache.slot_skip[s] for s in (3, 0, 1)] == [PREFIX] * 3
    torch.testing.assert_close(cache.prefix_keys[0][:, :, :PREFIX], prefix[0][0])
    torch.testing.assert_close(cache.prefix_values[0][:, :, :PREFIX], prefix[0][1])
    assert cache.prefix_keys[1] is None  # global layers keep whole slots
    for row, (slot, length) in enumerate(zip([3, 0, 1], lengths, strict=True)):
        own = range(max(PREFIX, length - WINDOW), length)
        ring = [(p - PREFIX) % WINDOW for p in own]
        torch.testing.assert_close(cache.keys[0][slot][:, ring], keys[0][row][:, list(own)])
        torch.testing.assert_close(cache.values[0][slot][:, ring], values[0][row][:, list(own)])
        torch.testing.assert_close(cache.keys[1][slot][:, :length], keys[1][row][:, :length])


def test_another_prefix_or_a_longer_one_stays_in_each_slot() -> None:
    keys, values, prefix = prompts([9, 11], seed=1)
    cache = make_cache(capacity=8)
    cache.store_prompts([0], [k[:1] for k in keys], [v[:1] for v in values], [9], prefix,
                        prefix_ids=(1, 2, 3, 4, 5))  # fmt: skip
    cache.store_prompts(
        [1],
        [k[1:] for k in keys],
        [v[1:] for v in values],
        [11],
        prefix,
        prefix_ids=(6, 7, 8, 9, 10),
    )  # another prefix: the first one stays
    assert cache.prefix_ids == (1, 2, 3, 4, 5) and cache.slot_skip[:2] == [PREFIX, 0]
    torch.testing.assert_close(cache.keys[0][1][:, :11], keys[0][1][:, :11])  # at p % window
    longer = make_cache(capacity=4)  # a prefix of 5 does not fit
    longer.store_prompts([2, 3], keys, values, [9, 11], prefix, prefix_ids=(1, 2, 3, 4, 5))
    assert longer.prefix_ids == () and longer.slot_skip[2:4] == [0, 0]


def test_fp8_rings_keep_the_prefix_in_each_slot() -> None:
    layers = [LayerSpec(True, 2, 4), LayerSpec(False, 1, 8)]
    cache = SlotKVCache(layers, max_slots=2, max_seq_len=40, window=WINDOW,
                        dtype=torch.bfloat16, device=torch.device("cpu"),
                        sliding_dtype=FP8, prefix_capacity=64)  # fmt: skip
    assert cache.prefix_capacity == 0 and cache.prefix_keys == [None, None]


def reference_attention(query, key, value, mask, scale):
    scores = (query @ key.transpose(-1, -2)) * scale
    return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ value


def test_a_decode_step_after_the_kept_prefix_attends_as_over_whole_slots() -> None:
    lengths = [12, 9, 25]
    keys, values, prefix = prompts(lengths, seed=2)
    kept, whole = make_cache(capacity=8), make_cache(capacity=0)
    for cache in (kept, whole):  # slots 0 and 2 follow the kept prefix, 1 another one
        for slot, ids in ((0, (1, 2, 3, 4, 5)), (1, (6, 7, 8, 9, 10)), (2, (1, 2, 3, 4, 5))):
            cache.store_prompts([slot], [k[slot : slot + 1] for k in keys],
                                [v[slot : slot + 1] for v in values], [lengths[slot]], prefix,
                                prefix_ids=ids)  # fmt: skip
    assert kept.slot_skip[:3] == [PREFIX, 0, PREFIX] and whole.slot_skip[:3] == [0, 0, 0]
    generator = torch.Generator().manual_seed(3)
    query = torch.randn(3, 4, 1, 4, generator=generator)
    step_key, step_value = torch.randn(2, 3, 2, 1, 4, generator=generator)
    outputs = []
    for cache in (kept, whole):
        cache.step[:, :3] = cache.step_inputs(lengths, [0, 1, 2])
        cache.own_len = cache.own_needed(lengths, [0, 1, 2])
        own_keys, own_values = cache.update(step_key, step_value, 0)
        mask = cache.decode_masks(3, kept=cache is kept)["sliding_attention"]
        if cache is kept:
            kept_kv = (cache.prefix_keys[0], cache.prefix_values[0])
            outputs.append(fast_ops.attention_after_prefix(query, own_keys, own_values, kept_kv,
                                                           mask, 0.5))  # fmt: skip
        else:
            grouped = query.view(3, 2, 2, 4)
            expected = reference_attention(grouped, own_keys, own_values, mask, 0.5)
            outputs.append(expected.reshape(3, 1, 4, 4))
    assert kept.own_len == WINDOW and whole.own_len == WINDOW  # row 2: a whole ring
    torch.testing.assert_close(outputs[0], outputs[1])
    # without row 2, the rows after the kept prefix read fewer own positions
    assert kept.own_needed(lengths[:2], [0, 1]) == 10 and whole.own_needed([12], [0]) == 13
    # row 2's window (positions 10-25) has passed the prefix (0-4), row 0's (0-12) has not
    assert not kept.sees_kept_prefix([25], [2]) and kept.sees_kept_prefix([25, 12], [2, 0])
    assert not kept.sees_kept_prefix([12], [1]) and not whole.sees_kept_prefix([12], [0])


@pytest.fixture(scope="module")
def wide_window_base(engine_config: EngineConfig):
    """The tiny model with a sliding window wider than its prompts, so decode steps see
    the system prompt's positions (the full-size model's 1,024 see most of them)."""
    return load_with_wide_window(engine_config)


def decode_logits(
    base: GemmaEngine, kept_positions: int, steps: int = 4
) -> tuple[list[torch.Tensor], list[int], int]:
    """Two photo requests prefilled after the cached system prompt, then decode steps
    feeding fixed tokens: their logits, the slots' skips and the prefix's length."""
    runtime = RuntimeConfig(max_slots=3, max_seq_len=1024, cuda_graphs=False)
    engine = BatchEngine(base, runtime, EnginePaths(kept_prefix_positions=kept_positions))
    try:
        seqs = [engine.prepare(Request(language="en", images=(png_bytes(draw_sign(640, 480)),))),
                engine.prepare(Request(language="de", images=(png_bytes(draw_menu(360, 480)),),
                                       question="Was ist vegetarisch?"))]  # fmt: skip
        runner = engine.runner
        logits = [runner.prefill([s.inputs for s in seqs], [0, 1], seqs[0].prefix)]
        skips = runner.cache.slot_skip[:2]
        positions = [s.num_prompt_tokens for s in seqs]
        for step in range(steps):
            runner.store_tokens([0, 1], torch.tensor([5 + step, 9 + step]))
            logits.append(runner.decode([p + step for p in positions]))
        return logits, skips, len(seqs[0].prefix)
    finally:
        engine.close()


def test_without_a_prefix_cache_nothing_is_kept(tiny_engine: GemmaEngine) -> None:
    runtime = RuntimeConfig(max_slots=1, max_seq_len=256, cuda_graphs=False,
                            prefix_cache_tokens=0)  # fmt: skip
    engine = BatchEngine(tiny_engine, runtime)
    try:
        assert engine.runner.cache.prefix_capacity == 0
    finally:
        engine.close()


def test_decode_after_the_kept_system_prompt_equals_decode_over_whole_slots(
    wide_window_base: GemmaEngine,
) -> None:
    kept, skips, prefix = decode_logits(wide_window_base, 512)
    whole, whole_skips, _ = decode_logits(wide_window_base, 0)
    assert 0 < prefix <= 512 and skips == [prefix, prefix] and whole_skips == [0, 0]
    for got, expected in zip(kept, whole, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_kept_prefix_fits_the_system_prompt_however_long(tiny_engine: GemmaEngine) -> None:
    """Its room follows this tokenizer's count of the system prompt: a fixed 512 kept
    nothing once the prompt grew past it (Gemma 4's own tokenizer may well count ~530)."""
    runtime = RuntimeConfig(max_slots=2, max_seq_len=1024, cuda_graphs=False)
    engine = BatchEngine(tiny_engine, runtime)
    try:
        tokens = tiny_engine.shared_prefix_tokens()
        assert engine.runner.cache.prefix_capacity == -(-tokens // 64) * 64
        seq = engine.prepare(Request(language="ja", question="Exit?"))
        assert 0 < len(seq.prefix) <= tokens
        engine.runner.prefill([seq.inputs], [0], seq.prefix)
        assert engine.runner.cache.slot_skip[0] == len(seq.prefix)  # kept, not in its ring
    finally:
        engine.close()


def test_each_decode_step_finds_a_graph_that_reads_enough_of_the_ring() -> None:
    lengths = attend_length_buckets(4096, None)

    def own(batch: int, length: int) -> list[int]:
        return own_lengths(batch, length, 1024, 512, lengths)  # the full-size model's

    assert own(64, 1024) == [512, 640, 768, 896, 1024]
    assert own(64, 1280) == [640, 768, 896, 1024] and own(64, 4096) == [1024]
    assert own(8, 1024) == [1024]  # few rows: kernels.decode_attention skips what is masked
    for position in range(0, 4096, 7):
        length = next(n for n in lengths if n > position)
        for skip in (0, 100, 488, 512):  # the row with the highest position
            needed = min(1024, position - skip + 1) if position >= skip else 1
            assert any(n >= needed for n in own(64, length))
