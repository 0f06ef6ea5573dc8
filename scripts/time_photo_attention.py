"""Time the vision tower's attention over 8 photos of 2,520 patches (16 heads of 72: the
flash kernel pads them to 96) by each way torch can run it: the packed variable-length
flash call the engine uses, and SDPA on the photos as a batch with each backend forced.
Prints ms per layer and the largest difference to the packed call.

    python3 scripts/time_photo_attention.py --out bench-out/photo-attention.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from inference.runtime import vision


def timed_ms(fn, repeats: int = 20) -> float:
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return round(start.elapsed_time(end) / repeats, 4)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--patches", type=int, default=2520)
    parser.add_argument("--out", type=Path, default=Path("bench-out/photo-attention.json"))
    args = parser.parse_args()
    heads, head_dim, scale = 16, 72, 1.0
    shape = (args.photos, heads, args.patches, head_dim)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    packed = [t.transpose(0, 1).reshape(1, heads, -1, head_dim) for t in (q, k, v)]
    lengths = torch.full((args.photos,), args.patches)
    bounds = torch.arange(0, (args.photos + 1) * args.patches, args.patches, dtype=torch.int32)
    bounds = bounds.cuda()

    def flash_packed():
        return vision.photo_attention(*packed, bounds, lengths, scale)

    expected = flash_packed()[0].view(args.photos, args.patches, heads, head_dim)
    result: dict = {"device": torch.cuda.get_device_name(), "shape": list(shape), "rows": {}}
    result["rows"]["flash, packed (engine)"] = {"ms": timed_ms(flash_packed), "max_diff": 0.0}
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                    SDPBackend.EFFICIENT_ATTENTION):  # fmt: skip

        def batched(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, scale=scale)

        try:
            got = batched().transpose(1, 2)
            diff = float((got.float() - expected.float()).abs().max())
            row = {"ms": timed_ms(batched), "max_diff": round(diff, 4)}
        except RuntimeError as exc:
            row = {"error": str(exc)[:200]}
        result["rows"][f"SDPA batch, {backend.name}"] = row
    for name, row in result["rows"].items():
        print(f"{name:36s} {row}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
