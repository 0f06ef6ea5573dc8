"""The decode step's dense projections at Gemma 4 26B-A4B's sizes (M = sequences in the
step): cuBLAS through F.linear, as the engine runs them, against split-K (K in S parts as one
batched matmul, then a float32 sum of the parts), per layer, with the weights' bytes read per
second and the error against float32. Why: in a 64-sequence step on an H200 (v13 profile)
the o projection (4,096 → 2,816) read its weights at 1.6 TB/s and the MLP's down projection
(2,112 → 2,816) at 1.3, against 2.9 for the fused q/k/v: with 2,816 outputs cuBLAS made
44-88 tiles for 132 SMs. Each timing is a CUDA graph over 8 layers' own weights.

    python scripts/check_dense_decode.py [--batches 8,64] [--parts 2,4,8] [--out F.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from check_moe_kernel import LAYERS, graph_ms, relative, write_rows

SHAPES = {  # name: (outputs, inputs), as the engine's weights are [out, in]
    "sliding q/k/v": (8192, 2816),
    "global q/k": (9216, 2816),
    "sliding o": (2816, 4096),
    "global o": (2816, 8192),
    "mlp gate/up": (4224, 2816),
    "mlp down": (2816, 2112),
    "router": (128, 2816),
}


def split_k(x: torch.Tensor, weight: torch.Tensor, parts: int) -> torch.Tensor:
    """x @ weight.T with K cut in `parts`: [parts, M, N] partial products, summed in float32."""
    rows, inputs = x.shape
    xs = x.view(rows, parts, inputs // parts).transpose(0, 1)
    ws = weight.view(-1, parts, inputs // parts).transpose(0, 1)
    return torch.bmm(xs, ws.transpose(1, 2)).sum(0, dtype=torch.float32).to(x.dtype)


@torch.inference_mode()
def measure(batch: int, parts: list[int]) -> dict:
    row: dict = {"batch": batch}
    for name, (outputs, inputs) in SHAPES.items():
        row[name] = measure_shape(batch, outputs, inputs, parts)
    return row


def measure_shape(batch: int, outputs: int, inputs: int, parts: list[int]) -> dict:
    weights = [torch.randn(outputs, inputs, device="cuda", dtype=torch.bfloat16) / 50
               for _ in range(LAYERS)]  # fmt: skip
    x = torch.randn(batch, inputs, device="cuda", dtype=torch.bfloat16)
    expected = x.float() @ weights[-1].float().T
    variants = {"cublas": lambda w: F.linear(x, w)}
    variants.update({f"split_k_{s}": (lambda w, s=s: split_k(x, w, s))
                     for s in parts if inputs % s == 0})  # fmt: skip
    entry = {}
    for variant, fn in variants.items():
        ms = graph_ms(lambda fn=fn: [fn(w) for w in weights])
        entry[variant] = {"ms": round(ms, 4), "error": relative(fn(weights[-1]), expected),
                          "tb_per_s": round(outputs * inputs * 2 / ms / 1e9, 2)}  # fmt: skip
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="8,64")
    parser.add_argument("--parts", default="2,4,8")
    parser.add_argument("--out", type=Path, default=Path("dense-decode.json"))
    args = parser.parse_args()
    parts = [int(p) for p in args.parts.split(",") if p]
    write_rows(args.out, args.batches, lambda batch: measure(batch, parts))


if __name__ == "__main__":
    main()
