"""A decode step's keys and values into the KV cache as one Triton kernel (GPUs).

SlotKVCache.update wrote them with two indexed assignments per layer: 60 index kernels a
step, each too small to pay for its launch (docs/performance.md). Here one program
per (row, KV head) copies that head's key and value to the row's slot at its index, both
in one launch. FP8 caches (opt-in, sliding layers) keep the indexed assignments: Triton's
interpreter rounds to FP8 wrongly (1.99 → 1.0), so the CPU could not test such a store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _write_kernel(
    keys_ptr, values_ptr, key_ptr, value_ptr, rows_ptr, index_ptr, heads,
    stride_cs, stride_ch, stride_cl, stride_kb, stride_kh, stride_vb, stride_vh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pair = tl.program_id(0)
    row, head = pair // heads, pair % heads
    slot = tl.load(rows_ptr + row).to(tl.int64)
    index = tl.load(index_ptr + row).to(tl.int64)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    key = tl.load(key_ptr + row * stride_kb + head * stride_kh + d, mask=d_ok)
    value = tl.load(value_ptr + row * stride_vb + head * stride_vh + d, mask=d_ok)
    where = slot * stride_cs + head * stride_ch + index * stride_cl + d
    tl.store(keys_ptr + where, key.to(keys_ptr.dtype.element_ty), mask=d_ok)
    tl.store(values_ptr + where, value.to(values_ptr.dtype.element_ty), mask=d_ok)


def write(keys, values, key, value, rows, index) -> None:
    """keys/values[rows[b], :, index[b]] = key/value[b, :, 0] (a layer's cache [slots, H, L,
    D] in the step's dtype, the step's [B, H, 1, D], rows and index [B])."""
    batch, heads, _, head_dim = key.shape
    if keys.stride() != values.stride() or keys.stride(-1) != 1 or key.stride(-1) != 1:
        raise ValueError("keys and values must share a layout with head_dim innermost")
    if rows.stride(0) != 1 or index.stride(0) != 1:
        raise ValueError("rows and index must be contiguous")
    if keys.dtype != key.dtype:
        raise ValueError("the cache keeps the step's dtype")
    _write_kernel[(batch * heads,)](
        keys, values, key, value, rows, index, heads, keys.stride(0), keys.stride(1),
        keys.stride(2), key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(head_dim),
    )  # fmt: skip


def works_on(device: torch.device) -> bool:
    """GPUs where the kernel writes what indexed assignment does: a sliding layer's cache
    (8 heads of 256) and a global one's (2 heads of 512), rows to slots out of order."""
    if device.type != "cuda":
        return False
    rows = torch.tensor([3, 0, 2], device=device)
    index = torch.tensor([5, 1023, 0], device=device)
    for heads, dim in ((8, 256), (2, 512)):
        keys, values = torch.zeros(2, 4, heads, 1024, dim, dtype=torch.bfloat16, device=device)
        key, value = torch.randn(2, 3, heads, 1, dim, device=device, dtype=torch.bfloat16)
        write(keys, values, key, value, rows, index)
        for stored, new in ((keys, key), (values, value)):
            if not torch.equal(stored[rows, :, index], new[:, :, 0]):
                return False
    return True
