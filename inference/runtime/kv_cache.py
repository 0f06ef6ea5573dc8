"""KV cache laid out for Gemma 4's two layer kinds, one row (slot) per running sequence.

Sliding layers keep a ring of `window` positions (position p lives at p % window);
global layers keep the full `max_seq_len`. Keys are stored after RoPE, so the
order inside the ring does not matter to attention. The object also plays
transformers' Cache role during a decode step: `update()` writes the step's
keys/values and returns the cache rows the batch attends to. The sliding layers may keep
theirs as FP8 (`sliding_dtype`; read by kernels.decode_attention).

A shared prompt prefix (the system prompt, from the prefix cache) may be kept once for
all slots in the sliding layers (`prefix_capacity` positions): a slot that follows it
keeps only its own positions in its ring (position p at (p - prefix) % window), and a
decode step reads the prefix once for all rows (fast_ops.decode_attention) and fewer
ring positions a row (`own_len`): at 64 sequences of ~1,000 positions after a 488-token
system prompt, ~640 of the window's 1,024 a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from inference.runtime.gemma4.fp8_experts import FP8, FP8_MAX


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
        max_slots: int,
        max_seq_len: int,
        window: int,
        dtype: torch.dtype,
        device: torch.device,
        sliding_dtype: torch.dtype | None = None,
        prefix_capacity: int = 0,
    ) -> None:
        self.layers = layers
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.window = window
        self.scratch_slot = max_slots  # padding rows of a decode batch write here
        self.keys, self.values = self._slots(dtype, sliding_dtype or dtype, device)
        # the shared prefix's keys and values [1, H, capacity, D] per sliding layer (None:
        # global layers). Not for FP8 rings: kernels.decode_attention would read the prefix
        # again for every row (slower than a copy in every slot: docs/performance.md)
        self.prefix_capacity = prefix_capacity if sliding_dtype in (None, dtype) else 0
        self.prefix_keys, self.prefix_values = self._kept_prefix(dtype, device)
        self.prefix_ids: tuple[int, ...] = ()  # the prefix kept there (the first that fit)
        # per slot, the positions its sliding rings leave to the kept prefix (0: none)
        self.slot_skip = [0] * (max_slots + 1)
        # Filled before each decode step (static tensors, so CUDA graphs can replay it): per
        # row its position, its slot, where the sliding layers' ring keeps the position, and
        # its skip
        self.step = torch.zeros(4, max_slots, dtype=torch.long, device=device)
        self.step_positions, self.step_rows, self.step_ring, self.step_skip = self.step
        # a decode step's keys and values in one kernel (kernels.kv_write.write), else (and
        # into FP8 caches) two indexed assignments per layer
        self.write_step: Callable | None = None
        # positions a decode step attends to (a graph is captured per value): the global
        # layers' first attend_len, the sliding layers' first own_len ring positions
        self.attend_len = max_seq_len
        self.own_len = window

    def _slots(self, dtype: torch.dtype, sliding_dtype: torch.dtype, device) -> tuple[list, list]:
        """Per layer, zeroed keys and values [max_slots + 1, H, L, D] (L: the window in
        sliding layers, stored as `sliding_dtype`; else max_seq_len)."""
        keys, values = [], []
        for spec in self.layers:
            length = self.window if spec.is_sliding else self.max_seq_len
            shape = (self.max_slots + 1, spec.num_kv_heads, length, spec.head_dim)
            stored = sliding_dtype if spec.is_sliding else dtype
            made_as = torch.uint8 if stored == FP8 else stored  # FP8 zeros as bytes: +0.0
            for cache in (keys, values):
                cache.append(torch.zeros(shape, dtype=made_as, device=device).view(stored))
        return keys, values

    def _kept_prefix(self, dtype: torch.dtype, device) -> tuple[list, list]:
        """Per layer, the kept prefix's zeroed keys and values [1, H, prefix_capacity, D];
        None for global layers, and for all where there is no room for one."""
        keys: list[torch.Tensor | None] = []
        values: list[torch.Tensor | None] = []
        for spec in self.layers:
            shape = (1, spec.num_kv_heads, self.prefix_capacity, spec.head_dim)
            for kept in (keys, values):
                made = spec.is_sliding and self.prefix_capacity
                kept.append(torch.zeros(shape, dtype=dtype, device=device) if made else None)
        return keys, values

    @staticmethod
    def bytes_needed(
        layers: list[LayerSpec],
        *,
        max_slots: int,
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
            total += 2 * (max_slots + 1) * spec.num_kv_heads * length * spec.head_dim * size
        return total

    @staticmethod
    def slots_within(budget: int, layers: list[LayerSpec], **sizes) -> int:
        """The most slots whose keys and values fit in `budget` bytes (`sizes`: as
        bytes_needed takes them, less max_slots); 0 when not even one does."""
        per_slot = SlotKVCache.bytes_needed(layers, max_slots=0, **sizes)  # the scratch slot
        return max(0, budget // per_slot - 1)

    # -- transformers Cache protocol, decode steps ----------------------------------------
    def step_inputs(self, positions: list[int], rows: list[int]) -> torch.Tensor:
        """What `step[:, :n]` holds for a decode step of these rows (CPU, [4, n]): the ring
        index computed here, not by a kernel in each sliding layer."""
        skip = [self.slot_skip[row] for row in rows]
        ring = [(p - s) % self.window for p, s in zip(positions, skip, strict=True)]
        return torch.tensor([positions, rows, ring, skip], dtype=torch.long)

    def own_needed(self, positions: list[int], rows: list[int]) -> int:
        """Ring positions the rows' sliding attention needs (with the step's own)."""
        own = [p - self.slot_skip[r] + 1 for p, r in zip(positions, rows, strict=True)]
        return min(self.window, max(own))

    def sees_kept_prefix(self, positions: list[int], rows: list[int]) -> bool:
        """Whether any row's window still holds positions of the kept prefix."""
        skips = (self.slot_skip[r] for r in rows)
        return any(0 < s > p - self.window + 1 for p, s in zip(positions, skips, strict=True))

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Store the step's key/value ([B, H, 1, D]) and return the first B rows to attend."""
        batch = key.shape[0]
        rows, positions = self.step_rows[:batch], self.step_positions[:batch]
        sliding = self.layers[layer_idx].is_sliding
        index = self.step_ring[:batch] if sliding else positions
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.write_step is not None and keys.dtype == key.dtype:
            self.write_step(keys, values, key, value, rows, index)
        else:
            put(keys, (rows, slice(None), index), key[:, :, 0])
            put(values, (rows, slice(None), index), value[:, :, 0])
        length = min(self.own_len, self.window) if sliding else self.attend_len
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
        *,
        apart: bool = False,
        prefix_ids: tuple[int, ...] = (),
    ) -> None:
        """Copy prefilled prompts' keys/values ([rows, H, width, D] per layer, right-padded)
        into their slots. `prefix`: per layer, the (keys, values) [1, H, P, D] of the shared
        prefix (token ids `prefix_ids`) the prompts start with; `apart`: the layers' keys
        begin after it (else they hold it too). The sliding layers keep it once for all
        slots when it fits there (the first prefix that does stays), else each slot does.
        Rows in consecutive slots take one copy per layer; the padding copied past a
        prompt's end is never attended (decode masks it, and writes there before it
        attends)."""
        skip = self._keep_prefix(prefix, prefix_ids)
        before = prefix[0][0].shape[2] if prefix is not None and apart else 0
        for slot in slots:
            self.slot_skip[slot] = skip
        for part, cache, new in ((0, self.keys, layer_keys), (1, self.values, layer_values)):
            for index, (stored, layer) in enumerate(zip(cache, new, strict=True)):
                sliding = self.layers[index].is_sliding
                offset = skip if sliding else 0  # ring index of position p: p - offset
                first = before
                if before and not offset:  # the slot keeps the prefix's positions too
                    if self._one_copy(slots, before + layer.shape[2], sliding):
                        head = prefix[index][part].expand(len(slots), -1, -1, -1)
                        self._store(stored, slots, head, 0, [before] * len(slots), 0, sliding)
                    else:
                        layer = torch.cat([prefix[index][part].expand(len(slots), -1, -1, -1),
                                           layer], dim=2)  # fmt: skip
                        first = 0
                self._store(stored, slots, layer, first, lengths, offset, sliding)

    def _one_copy(self, slots: list[int], end: int, ring: bool) -> bool:
        """Whether rows ending before `end` (ring index) go into `slots` as one copy."""
        consecutive = slots == list(range(slots[0], slots[0] + len(slots)))
        return consecutive and end <= (self.window if ring else self.max_seq_len)

    def _store(self, stored, slots, layer, first: int, lengths, offset: int, ring: bool) -> None:
        """Store positions first.. of `layer` ([rows, H, W, D]) up to each row's length at
        index position - offset (in the ring: modulo the window, its last window ones)."""
        width = layer.shape[2]
        if self._one_copy(slots, first + width - offset, ring):
            start = max(first, offset)  # positions below offset: the kept prefix's
            rows = slice(slots[0], slots[0] + len(slots))
            copied = fit(layer[:, :, start - first :], stored.dtype)
            stored[rows, :, start - offset : first + width - offset].copy_(copied)
            return
        for row, (slot, length) in enumerate(zip(slots, lengths, strict=True)):
            start = max(first, offset, length - self.window if ring else 0)
            positions = torch.arange(start, length, device=layer.device)
            index = (positions - offset) % self.window if ring else positions - offset
            put(stored, (slot, slice(None), index), layer[row][:, start - first : length - first])

    def _keep_prefix(self, prefix: list | None, prefix_ids: tuple[int, ...]) -> int:
        """Positions the sliding rings of slots following this prefix leave to the kept
        one: its length if it is (or now becomes) the kept prefix, else 0."""
        if prefix is None or not prefix_ids or len(prefix_ids) > self.prefix_capacity:
            return 0
        if not self.prefix_ids:
            for index, kept in enumerate(self.prefix_keys):
                if kept is not None:
                    for part, buffer in ((0, kept), (1, self.prefix_values[index])):
                        buffer[:, :, : len(prefix_ids)].copy_(prefix[index][part])
            self.prefix_ids = prefix_ids
        return len(prefix_ids) if prefix_ids == self.prefix_ids else 0

    def move(self, from_slot: int, to_slot: int) -> None:
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[to_slot].copy_(keys[from_slot])
            values[to_slot].copy_(values[from_slot])
        self.slot_skip[to_slot] = self.slot_skip[from_slot]

    def decode_masks(self, batch: int, kept: bool) -> dict[str, torch.Tensor]:
        """Boolean attention masks [B, 1, 1, L] for one decode step of the first `batch`
        rows of `step` (all below `attend_len`). The sliding layers' hold, with `kept`, the
        kept prefix's positions first (visible to rows that follow it, within the window),
        then their own ring's."""
        positions, skip = self.step_positions[:batch, None], self.step_skip[:batch, None]
        device = positions.device
        own = positions - skip
        ring = torch.arange(min(self.window, self.own_len), device=device)[None, :]
        held = own - torch.remainder(own - ring, self.window)  # own position at each index
        sliding = held >= 0
        if kept:
            prefix = torch.arange(self.prefix_capacity, device=device)[None, :]
            visible = (prefix < skip) & (prefix > positions - self.window)
            sliding = torch.cat([visible, sliding], 1)
        full = torch.arange(self.attend_len, device=device)[None, :] <= positions
        return {
            "sliding_attention": sliding[:, None, None, :],
            "full_attention": full[:, None, None, :],
        }
