"""The decode step's masked softmax on the GPU at Gemma 4 26B-A4B's sizes: the compiled
torch version the engine used (fast_ops.masked_softmax under torch.compile), the same
compiled without split reductions, and the Triton kernel (kernels.softmax), per layer, with
the largest difference to the float32 softmax. Rows: a sliding layer (8 KV heads, 2
queries each, 1,024 positions) and a global one (2 KV heads, 8 queries each, 1,280 and
4,096 positions) at each batch. Each timing is a CUDA graph replaying 8 layers with their
own scores.

    python scripts/check_decode_softmax.py [--batches 1,8,64] [--out decode-softmax.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from check_moe_kernel import LAYERS, graph_ms, write_rows

from inference.runtime.gemma4 import fast_ops
from inference.runtime.kernels import softmax

SHAPES = {"sliding 1024": (8, 2, 1024), "global 1280": (2, 8, 1280), "global 4096": (2, 8, 4096)}


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--out", type=Path, default=Path("decode-softmax.json"))
    args = parser.parse_args()
    ways = {
        "compiled": torch.compile(fast_ops.masked_softmax),
        "compiled, no split reductions": torch.compile(
            fast_ops.masked_softmax, options={"split_reductions": False}
        ),
        "triton kernel": softmax.masked_softmax,
    }
    write_rows(args.out, args.batches, lambda batch: measure(batch, ways))


def measure(batch: int, ways: dict) -> dict:
    row: dict = {"batch": batch}
    for shape_name, (heads, group, length) in SHAPES.items():
        scores = [(torch.randn(batch, heads, group, length, device="cuda") * 8).bfloat16()
                  for _ in range(LAYERS)]  # fmt: skip
        visible = torch.randint(length // 2, length + 1, (batch, 1), device="cuda")
        mask = (torch.arange(length, device="cuda")[None, :] < visible)[:, None, None, :]
        expected = torch.softmax(
            (scores[0].float() * 0.0625).masked_fill(~mask, float("-inf")), dim=-1
        )
        for name, way in ways.items():
            error = (way(scores[0], mask, 0.0625).float() - expected).abs().max().item()

            def run(way=way, scores=scores, mask=mask) -> None:
                for layer_scores in scores:
                    way(layer_scores, mask, 0.0625)

            us = graph_ms(run)
            row[f"{shape_name}: {name}"] = {"us": round(us * 1000, 2), "error": round(error, 5)}
    return row


if __name__ == "__main__":
    main()
