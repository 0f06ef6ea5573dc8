"""Time the vision tower's attention over N photos of 2,520 patches (16 heads of 72: the
flash kernel pads them to 96) by each way torch can run it: the packed variable-length
flash call the engine uses, and SDPA on the photos as a batch with each backend forced.
Prints ms per layer, the first call's ms (a plan built for the shape) and the largest
difference to the packed call.

    python3 scripts/time_photo_attention.py --out bench-out/photo-attention.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_prefill import timed_ms as first_call_ms  # a shape's first call: plans included
from torch.nn.attention import SDPBackend, sdpa_kernel

from inference.runtime.gemma4.fast_ops import flash_varlen


def timed_ms(fn, repeats: int = 20) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return round(start.elapsed_time(end) / repeats, 4)


def rows_for(photos: int, patches: int) -> dict:
    heads, head_dim, scale = 16, 72, 1.0
    shape = (photos, heads, patches, head_dim)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    packed = [t.transpose(1, 2).reshape(-1, heads, head_dim) for t in (q, k, v)]  # [T, H, D]
    bounds = torch.arange(0, (photos + 1) * patches, patches, dtype=torch.int32, device="cuda")

    def flash_packed():
        return flash_varlen(*packed, bounds, bounds, patches, patches, causal=False, scale=scale)

    first = first_call_ms(flash_packed)
    expected = flash_packed().view(photos, patches, heads, head_dim)
    rows = {"flash, packed": {"first_call_ms": first, "ms": timed_ms(flash_packed)}}
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                    SDPBackend.EFFICIENT_ATTENTION):  # fmt: skip

        def batched(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, scale=scale)

        try:
            first = first_call_ms(batched)
            got = batched().transpose(1, 2)
            diff = float((got.float() - expected.float()).abs().max())
            row = {"first_call_ms": first, "ms": timed_ms(batched), "max_diff": round(diff, 4)}
        except RuntimeError as exc:
            row = {"error": str(exc)[:200]}
        rows[f"SDPA batch, {backend.name}"] = row
    return rows


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", default="8,3,1")
    parser.add_argument("--patches", type=int, default=2520)
    parser.add_argument("--out", type=Path, default=Path("bench-out/photo-attention.json"))
    args = parser.parse_args()
    result: dict = {"device": torch.cuda.get_device_name(), "patches": args.patches}
    for photos in [int(n) for n in args.photos.split(",")]:
        result[f"{photos} photos"] = rows = rows_for(photos, args.patches)
        for name, row in rows.items():
            print(f"{photos} photos, {name:28s} {row}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
