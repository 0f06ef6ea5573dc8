"""KV cache laid out for Gemma 4's two layer kinds, one row (slot) per running sequence.

Sliding layers keep a ring of `window` positions (position p lives at p % window);
global layers keep the full `max_seq_len`. Keys are stored after RoPE, so the
order inside the ring does not matter to attention. The object also plays
transformers' Cache role during a decode step: `update()` writes the step's
keys/values and returns the cache rows the batch attends to. The sliding layers may keep
theirs as FP8 (`sliding_dtype`; read by attention_kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from inference.runtime.fp8_experts import FP8, FP8_MAX


def fit(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`tensor` as `dtype`; into FP8 clamped to its range first (a cast would make NaN of
    values beyond it)."""
    if dtype == FP8:
        tensor = tensor.clamp(-FP8_MAX, FP8_MAX)
    return tensor.to(dtype)


def put(stored: torch.Tensor, where: tuple, values: torch.Tensor) -> None:
    """stored[where] = values, in stored's dtype; FP8 through byte views (indexing kernels
    for FP8 do not exist on every device, byte ones do)."""
    values = fit(values, stored.dtype)
    if stored.dtype == FP8:
        stored, values = stored.view(torch.uint8), values.view(torch.uint8)
    stored[where] = values


@dataclass(frozen=True)
class LayerSpec:
    is_sliding: bool
    num_kv_heads: int
    head_dim: int


class SlotKVCache:
    def __init__(
        self,
        layers: list[LayerSpec],
        *,
        num_slots: int,
        max_seq_len: int,
        window: int,
        dtype: torch.dtype,
        device: torch.device,
        sliding_dtype: torch.dtype | None = None,
    ) -> None:
        self.layers = layers
        self.num_slots = num_slots
        self.max_seq_len = max_seq_len
        self.window = window
        self.scratch_slot = num_slots  # padding rows of a decode batch write here
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for spec in layers:
            length = window if spec.is_sliding else max_seq_len
            shape = (num_slots + 1, spec.num_kv_heads, length, spec.head_dim)
            stored = (sliding_dtype or dtype) if spec.is_sliding else dtype
            made_as = torch.uint8 if stored == FP8 else stored  # FP8 zeros as bytes: +0.0
            for cache in (self.keys, self.values):
                cache.append(torch.zeros(shape, dtype=made_as, device=device).view(stored))
        # Filled before each decode step (static tensors, so CUDA graphs can replay it): per
        # row its position, its slot, and where the sliding layers' ring keeps the position
        self.step = torch.zeros(3, num_slots, dtype=torch.long, device=device)
        self.step_positions, self.step_rows, self.step_ring = self.step
        # a decode step's keys and values in one kernel (kv_write_kernel.write), else (and
        # into FP8 caches) two indexed assignments per layer
        self.write_step: Callable | None = None
        # positions a decode step attends to (a graph is captured per value)
        self.attend_len = max_seq_len

    @staticmethod
    def bytes_needed(
        layers: list[LayerSpec],
        *,
        num_slots: int,
        max_seq_len: int,
        window: int,
        dtype_size: int,
        sliding_dtype_size: int | None = None,
    ) -> int:
        """What the cache allocates for keys and values (the scratch slot included)."""
        total = 0
        for spec in layers:
            length = window if spec.is_sliding else max_seq_len
            size = (sliding_dtype_size or dtype_size) if spec.is_sliding else dtype_size
            total += 2 * (num_slots + 1) * spec.num_kv_heads * length * spec.head_dim * size
        return total

    @staticmethod
    def slots_within(budget: int, layers: list[LayerSpec], **sizes) -> int:
        """The most slots whose keys and values fit in `budget` bytes (`sizes`: as
        bytes_needed takes them, less num_slots); 0 when not even one does."""
        per_slot = SlotKVCache.bytes_needed(layers, num_slots=0, **sizes)  # the scratch slot
        return max(0, budget // per_slot - 1)

    # -- transformers Cache protocol, decode steps ----------------------------------------
    def step_inputs(self, positions: list[int], rows: list[int]) -> torch.Tensor:
        """What `step[:, :n]` holds for a decode step of these rows (CPU, [3, n]): the ring
        index computed here, not by a kernel in each sliding layer."""
        ring = [position % self.window for position in positions]
        return torch.tensor([positions, rows, ring], dtype=torch.long)

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Store the step's key/value ([B, H, 1, D]) and return the first B rows to attend."""
        batch = key.shape[0]
        rows, positions = self.step_rows[:batch], self.step_positions[:batch]
        index = self.step_ring[:batch] if self.layers[layer_idx].is_sliding else positions
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.write_step is not None and keys.dtype == key.dtype:
            self.write_step(keys, values, key, value, rows, index)
        else:
            put(keys, (rows, slice(None), index), key[:, :, 0])
            put(values, (rows, slice(None), index), value[:, :, 0])
        length = min(self.attend_len, keys.shape[2])
        return keys[:batch, :, :length], values[:batch, :, :length]

    def is_compileable(self) -> bool:  # pragma: no cover - asked by some transformers paths
        return False

    # -- prefill and slot management -------------------------------------------------------
    def store_prompts(
        self,
        slots: list[int],
        layer_keys: list,
        layer_values: list,
        lengths: list[int],
        prefix: list | None = None,
    ) -> None:
        """Copy prefilled prompts' keys/values ([rows, H, width, D] per layer, right-padded)
        into their slots. Prompts within the window going to consecutive slots (the usual
        case) take one copy per layer: the padding copied past a prompt's end is never
        attended (decode masks it, and writes there before it attends). `prefix`: per layer,
        the (keys, values) [1, H, P, D] of a shared prefix the prompts' positions follow
        (stored first in each slot), when the prefill kept them apart."""
        before = prefix[0][0].shape[2] if prefix else 0
        width = before + layer_keys[0].shape[2]
        if slots == list(range(slots[0], slots[0] + len(slots))) and width <= self.window:
            rows = slice(slots[0], slots[0] + len(slots))
            for part, cache, new in ((0, self.keys, layer_keys), (1, self.values, layer_values)):
                for index, (stored, layer) in enumerate(zip(cache, new, strict=True)):
                    if before:
                        stored[rows, :, :before].copy_(fit(prefix[index][part], stored.dtype))
                    stored[rows, :, before:width].copy_(fit(layer, stored.dtype))
            return
        if before:  # rare (slots apart, or past the window): joined, as without a prefix
            layer_keys, layer_values = (
                [torch.cat([kv[part].expand(len(slots), -1, -1, -1), layer], dim=2)
                 for kv, layer in zip(prefix, layers, strict=True)]
                for part, layers in ((0, layer_keys), (1, layer_values))
            )  # fmt: skip
        for row, (slot, length) in enumerate(zip(slots, lengths, strict=True)):
            self.store_prompt(
                slot, [k[row] for k in layer_keys], [v[row] for v in layer_values], length
            )

    def store_prompt(self, slot: int, layer_keys: list, layer_values: list, length: int) -> None:
        """Copy one prefilled prompt's keys/values ([H, L, D] per layer) into a slot."""
        for layer_idx, spec in enumerate(self.layers):
            key = layer_keys[layer_idx][:, :length]
            value = layer_values[layer_idx][:, :length]
            if spec.is_sliding:
                start = max(0, length - self.window)
                positions = torch.arange(start, length, device=key.device) % self.window
                put(self.keys[layer_idx], (slot, slice(None), positions), key[:, start:])
                put(self.values[layer_idx], (slot, slice(None), positions), value[:, start:])
            else:
                put(self.keys[layer_idx], (slot, slice(None), slice(0, length)), key)
                put(self.values[layer_idx], (slot, slice(None), slice(0, length)), value)

    def move(self, from_slot: int, to_slot: int) -> None:
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[to_slot].copy_(keys[from_slot])
            values[to_slot].copy_(values[from_slot])

    def decode_masks(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean attention masks [B, 1, 1, L] for one decode step at `positions` [B] (all
        below `attend_len`)."""
        device = positions.device
        pos = positions[:, None]
        ring = torch.arange(min(self.window, self.attend_len), device=device)[None, :]
        held = pos - torch.remainder(pos - ring, self.window)  # position stored at each ring index
        sliding = held >= 0
        full = torch.arange(self.attend_len, device=device)[None, :] <= pos
        return {
            "sliding_attention": sliding[:, None, None, :],
            "full_attention": full[:, None, None, :],
        }
