"""Prompts copied into KV slots: one copy per layer for a group equals the row-by-row copy."""

from __future__ import annotations

import pytest
import torch

from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kv_cache import LayerSpec, SlotKVCache, fit


def make_cache(window: int, sliding_dtype: torch.dtype | None = None) -> SlotKVCache:
    layers = [LayerSpec(True, 2, 4), LayerSpec(False, 1, 8)]
    return SlotKVCache(layers, max_slots=5, max_seq_len=40, window=window,
                       dtype=torch.float32, device=torch.device("cpu"),
                       sliding_dtype=sliding_dtype)  # fmt: skip


def prefilled(lengths: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    width = max(lengths)
    keys = [torch.randn(len(lengths), 2, width, 4), torch.randn(len(lengths), 1, width, 8)]
    values = [torch.randn_like(k) for k in keys]
    return keys, values


def held(cache: SlotKVCache, slot: int, length: int) -> list[torch.Tensor]:
    """What decode may attend to after a prompt of `length`: ring/global positions < length."""
    window = cache.window
    ring = [p % window for p in range(max(0, length - window), length)]
    return [
        cache.keys[0][slot][:, ring], cache.values[0][slot][:, ring],
        cache.keys[1][slot][:, :length], cache.values[1][slot][:, :length],
    ]  # fmt: skip


def test_group_copy_equals_row_copies() -> None:
    torch.manual_seed(0)
    lengths = [7, 12, 3]
    keys, values = prefilled(lengths)
    grouped, by_row = make_cache(window=16), make_cache(window=16)
    grouped.store_prompts([1, 2, 3], keys, values, lengths)
    for row, slot in enumerate([3, 0, 2]):  # not consecutive: one row at a time
        by_row.store_prompts([slot], [k[row : row + 1] for k in keys],
                             [v[row : row + 1] for v in values], [lengths[row]])  # fmt: skip
    for row, length in enumerate(lengths):
        expected = [keys[0][row][:, :length], values[0][row][:, :length],
                    keys[1][row][:, :length], values[1][row][:, :length]]  # fmt: skip
        for cache, slot in ((grouped, 1 + row), (by_row, [3, 0, 2][row])):
            for a, b in zip(held(cache, slot, length), expected, strict=True):
                torch.testing.assert_close(a, b)
    assert grouped.keys[1][0].abs().sum() == 0 and grouped.keys[1][4].abs().sum() == 0


@pytest.mark.parametrize("slots", [[1, 2, 3], [3, 0, 1]])
def test_a_prefix_kept_apart_is_stored_as_the_joined_prompts_are(slots) -> None:
    torch.manual_seed(2)
    prefix, lengths = 5, [12, 9, 7]
    keys, values = prefilled(lengths)  # the whole prompts: the prefix's first, the same
    for layer in (*keys, *values):
        layer[1:, :, :prefix] = layer[:1, :, :prefix]
    joined, apart = make_cache(window=16), make_cache(window=16)
    joined.store_prompts(slots, keys, values, lengths)
    shared = [(k[:1, :, :prefix], v[:1, :, :prefix]) for k, v in zip(keys, values, strict=True)]
    own_keys, own_values = ([t[:, :, prefix:] for t in layers] for layers in (keys, values))
    apart.store_prompts(slots, own_keys, own_values, lengths, shared, apart=True)
    for slot, length in zip(slots, lengths, strict=True):
        for a, b in zip(held(apart, slot, length), held(joined, slot, length), strict=True):
            torch.testing.assert_close(a, b)


def test_prompts_longer_than_the_window_wrap_around_the_ring() -> None:
    torch.manual_seed(1)
    lengths = [11, 6]
    keys, values = prefilled(lengths)
    cache = make_cache(window=8)
    cache.store_prompts([0, 2], keys, values, lengths)  # slots not consecutive, too
    ring = [p % 8 for p in range(3, 11)]
    torch.testing.assert_close(cache.keys[0][0][:, ring], keys[0][0][:, 3:11])
    torch.testing.assert_close(cache.keys[0][2][:, :6], keys[0][1][:, :6])
    torch.testing.assert_close(cache.values[1][0][:, :11], values[1][0][:, :11])


def test_fp8_sliding_layers_store_clamped_fp8_and_the_global_ones_keep_their_dtype() -> None:
    torch.manual_seed(2)
    lengths = [5, 9]
    keys, values = prefilled(lengths)
    keys[0][0, 0, 0, 0] = 1000.0  # beyond FP8's range: clamped to 448, not NaN
    cache = make_cache(window=16, sliding_dtype=FP8)
    assert cache.keys[0].dtype == FP8 and cache.keys[1].dtype == torch.float32
    cache.store_prompts([0, 1], keys, values, lengths)
    assert cache.keys[0][0, 0, 0, 0].float() == 448.0
    torch.testing.assert_close(cache.values[0][1][:, :9], fit(values[0][1][:, :9], FP8))
    torch.testing.assert_close(cache.keys[1][1][:, :9], keys[1][1][:, :9])
    # a decode step writes its key/value as FP8 too, at the ring position
    cache.step[:, :2] = cache.step_inputs([5, 9], [0, 1])
    step_key, step_value = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    attended_keys, _ = cache.update(step_key, step_value, 0)
    assert attended_keys.dtype == FP8
    torch.testing.assert_close(cache.keys[0][1][:, 9], fit(step_key[1, :, 0], FP8))
    torch.testing.assert_close(cache.values[0][0][:, 5], fit(step_value[0, :, 0], FP8))


def test_an_fp8_kv_cache_needs_the_engines_own_decode_attention() -> None:
    with pytest.raises(ValueError):
        EnginePaths(attention=False).check(RuntimeConfig(fp8_kv_cache=True))
    EnginePaths().check(RuntimeConfig(fp8_kv_cache=True))


def test_a_memory_budget_holds_whole_slots_and_the_scratch_one() -> None:
    layers = [LayerSpec(True, 2, 4), LayerSpec(False, 1, 8)]
    sizes = {"max_seq_len": 40, "window": 16, "dtype_size": 4}
    for slots in (1, 3, 7):
        budget = SlotKVCache.bytes_needed(layers, max_slots=slots, **sizes)
        assert SlotKVCache.slots_within(budget, layers, **sizes) == slots
        assert SlotKVCache.slots_within(budget - 1, layers, **sizes) == slots - 1
    one_slot = SlotKVCache.bytes_needed(layers, max_slots=1, **sizes)
    assert SlotKVCache.slots_within(one_slot - 1, layers, **sizes) == 0
    # the sliding layers in one-byte FP8: more slots in the same budget
    assert SlotKVCache.slots_within(one_slot * 4, layers, **sizes, sliding_dtype_size=1) > (
        SlotKVCache.slots_within(one_slot * 4, layers, **sizes)
    )
    cache = make_cache(window=16)  # 5 slots and the scratch one, as bytes_needed counts
    allocated = sum(t.numel() * t.element_size() for t in (*cache.keys, *cache.values))
    assert allocated == SlotKVCache.bytes_needed(layers, max_slots=5, **sizes)


def test_a_decode_step_writes_the_ring_index_in_sliding_layers_and_the_position_in_global() -> None:
    cache = make_cache(window=16)
    step = cache.step_inputs([20, 3], [1, 0])  # past the window, and not
    assert step.tolist() == [[20, 3], [1, 0], [4, 3], [0, 0]]
    cache.step[:, :2] = step
    keys = [torch.randn(2, 2, 1, 4), torch.randn(2, 1, 1, 8)]
    values = [torch.randn_like(k) for k in keys]
    for layer in (0, 1):
        cache.update(keys[layer], values[layer], layer)
    torch.testing.assert_close(cache.keys[0][1][:, 4], keys[0][0, :, 0])
    torch.testing.assert_close(cache.values[0][0][:, 3], values[0][1, :, 0])
    torch.testing.assert_close(cache.keys[1][1][:, 20], keys[1][0, :, 0])
    torch.testing.assert_close(cache.values[1][0][:, 3], values[1][1, :, 0])
