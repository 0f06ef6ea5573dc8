"""Prompt attention of sliding layers without a mask equals Gemma 4's masked attention."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from inference import EngineConfig, Request
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig
from inference.runtime.gemma4 import fast_ops
from tests.conftest import load_with_wide_window
from tools.samples import draw_menu, draw_sign


def test_vision_spans_are_the_runs_of_image_or_audio_tokens() -> None:
    assert fast_ops.vision_spans([0, 0, 1, 1, 1, 0, 2, 2]) == [(2, 5), (6, 8)]
    assert fast_ops.vision_spans([1, 0, 0]) == [(0, 1)]
    assert fast_ops.vision_spans([0, 0]) == []


def test_span_runs_group_consecutive_rows_with_the_same_image_span() -> None:
    spans = [[(2, 6)], [(2, 6), (8, 10)], [(1, 3), (8, 10)], [(8, 10)], [], [(2, 6)]]
    assert sorted(fast_ops.span_runs(spans), key=lambda run: run[0].start) == [
        (slice(0, 2), (2, 6)),
        (slice(1, 4), (8, 10)),
        (slice(2, 3), (1, 3)),
        (slice(5, 6), (2, 6)),
    ]


def test_prompt_attention_equals_causal_or_same_image_mask() -> None:
    torch.manual_seed(0)
    batch, heads, kv_heads, length, dim = 5, 4, 2, 12, 8
    query = torch.randn(batch, heads, length, dim)
    key, value = torch.randn(2, batch, kv_heads, length, dim)
    # rows 0-1 and 2-3 share an image's place (attended together), row 4 has two
    spans = [[(2, 6)], [(2, 6)], [(8, 11)], [(8, 11)], [(1, 3), (5, 9)]]
    mask = torch.ones(length, length).tril().bool().repeat(batch, 1, 1)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            mask[row, start:end, start:end] = True
    expected = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask[:, None], scale=0.5, enable_gqa=True
    ).transpose(1, 2)
    got = fast_ops.prompt_attention(query, key, value, spans, 0.5)
    torch.testing.assert_close(got, expected)


def test_prompt_attention_after_a_cached_prefix_sees_all_of_it() -> None:
    torch.manual_seed(1)
    batch, heads, kv_heads, prefix, length, dim = 2, 4, 2, 5, 9, 8
    query = torch.randn(batch, heads, length, dim)
    key, value = torch.randn(2, batch, kv_heads, prefix + length, dim)
    spans = [[(2, 6)], [(0, 3)]]
    total = prefix + length
    mask = torch.ones(total, total).tril().bool()[prefix:].repeat(batch, 1, 1)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            mask[row, start:end, prefix + start : prefix + end] = True
    expected = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask[:, None], scale=0.5, enable_gqa=True
    ).transpose(1, 2)
    got = fast_ops.prompt_attention(query, key, value, spans, 0.5)
    torch.testing.assert_close(got, expected)


@pytest.fixture(scope="module")
def wide_window_engine(engine_config: EngineConfig):
    """The tiny model with a sliding window wider than its prompts (as the full-size
    model's 1,024 is for a photo prompt), so the sliding layers' mask is causal+images."""
    base = load_with_wide_window(engine_config)
    engine = BatchEngine(base, RuntimeConfig(max_slots=2, max_seq_len=1024, cuda_graphs=False))
    yield engine
    engine.close()


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def record_spans(monkeypatch) -> list:
    """The image spans of each call of fast_ops.prompt_attention from now on."""
    calls, unmasked_attention = [], fast_ops.prompt_attention

    def recording(query, key, value, spans, scaling):
        calls.append(spans)
        return unmasked_attention(query, key, value, spans, scaling)

    monkeypatch.setattr(fast_ops, "prompt_attention", recording)
    return calls


def test_prefill_without_masks_equals_the_masked_prefill(wide_window_engine, monkeypatch) -> None:
    engine, runner = wide_window_engine, wide_window_engine.runner
    requests = [
        Request(language="de", images=(png(draw_sign(640, 480)),), question="Was steht da?"),
        Request(language="en", images=(png(draw_menu(360, 480, seed=2)),)),
    ]
    inputs = [engine.prepare(request).inputs for request in requests]
    calls = record_spans(monkeypatch)
    runner.flash_prompts = False
    masked = runner.prefill(inputs, [0, 1])
    masked_keys = [keys[:2].clone() for keys in runner.cache.keys]
    assert not calls
    runner.flash_prompts = True
    unmasked = runner.prefill(inputs, [0, 1])
    assert calls and all(len(spans[0]) == len(spans[1]) == 1 for spans in calls)
    torch.testing.assert_close(unmasked, masked, rtol=1e-4, atol=1e-4)
    for got, expected in zip(runner.cache.keys, masked_keys, strict=True):
        torch.testing.assert_close(got[:2], expected, rtol=1e-4, atol=1e-4)


def test_without_the_image_rule_the_unmasked_prefill_is_causal(
    wide_window_engine, monkeypatch
) -> None:
    """A checkpoint whose config has no image rule (use_bidirectional_attention not
    "vision"): transformers' masks are causal, and so is the runner's prompt attention."""
    engine, runner = wide_window_engine, wide_window_engine.runner
    assert runner.image_rule  # the tiny checkpoint has it, as 26B-A4B
    text_config = engine.base.model.config.get_text_config()
    monkeypatch.setattr(text_config, "use_bidirectional_attention", None)
    monkeypatch.setattr(runner, "image_rule", False)
    inputs = [engine.prepare(Request(language="de", images=(png(draw_sign(640, 480)),))).inputs]
    calls = record_spans(monkeypatch)
    runner.flash_prompts = False
    masked = runner.prefill(inputs, [0])
    runner.flash_prompts = True
    unmasked = runner.prefill(inputs, [0])
    assert calls and all(spans == [[]] for spans in calls)
    torch.testing.assert_close(unmasked, masked, rtol=1e-4, atol=1e-4)


def slot_keys(cache, layer: int, slot: int, length: int) -> torch.Tensor:
    """Keys of positions 0..length-1 of a slot (within the window), the system prompt's from
    where the sliding layers keep it once (kv_cache's kept prefix) if they do."""
    skip = cache.slot_skip[slot] if cache.prefix_keys[layer] is not None else 0
    own = cache.keys[layer][slot, :, : length - skip]
    return torch.cat([cache.prefix_keys[layer][0, :, :skip], own], dim=1) if skip else own


@pytest.mark.parametrize("flash_prompts", [True, False], ids=["unmasked", "masked"])
def test_prefill_after_a_cached_prefix_equals_the_whole_prefill(
    wide_window_engine, flash_prompts: bool
) -> None:
    engine, runner = wide_window_engine, wide_window_engine.runner
    seqs = [
        engine.prepare(Request(language="de", images=(png(draw_sign(640, 480)),), question="Wo?")),
        engine.prepare(Request(language="th", images=(png(draw_menu(360, 480, seed=2)),))),
    ]
    prefix = seqs[0].prefix
    assert len(prefix) >= 32 and seqs[1].prefix == prefix  # the system prompt's rules
    inputs = [seq.inputs for seq in seqs]
    lengths = [seq.num_prompt_tokens for seq in seqs]
    runner.flash_prompts = flash_prompts
    runner.prefixes.clear()
    whole = runner.prefill(inputs, [0, 1])
    whole_keys = [keys[:2].clone() for keys in runner.cache.keys]
    hits = runner.prefixes.hits
    for _ in range(2):  # the prefix computed, then from the cache
        after_prefix = runner.prefill(inputs, [0, 1], prefix)
        torch.testing.assert_close(after_prefix, whole, rtol=1e-4, atol=1e-4)
        for layer, expected in enumerate(whole_keys):
            for row, length in enumerate(lengths):
                torch.testing.assert_close(
                    slot_keys(runner.cache, layer, row, length), expected[row, :, :length],
                    rtol=1e-4, atol=1e-4,
                )  # fmt: skip
    assert runner.prefixes.hits == hits + 1 and runner.prefixes.stats()["entries"] == 1
    runner.flash_prompts = True
