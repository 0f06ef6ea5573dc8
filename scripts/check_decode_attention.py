"""The sliding layers' decode attention on the GPU at Gemma 4 26B-A4B's sizes (16 query
heads, 8 KV heads of 256, a ring of 1,024 positions): the engine's bf16 path (two batched
matmuls around the compiled masked softmax, fast_ops) against the FP8 kernels
(kernels.decode_attention), per layer, with the error against float32 attention and the bytes of
keys and values read per second. Each timing is a CUDA graph replaying 8 layers with their
own caches. With --sweep, the FP8 kernels' settings: programs per call (parts of the
ring), positions per loop step, warps and pipeline stages.

    python scripts/check_decode_attention.py [--batches 1,8,64] [--sweep] [--out F.json]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from check_moe_kernel import LAYERS, graph_ms, relative, write_rows

from inference.runtime.gemma4 import fast_ops
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kernels import decode_attention
from inference.runtime.kv_cache import fit

HEADS, KV_HEADS, HEAD_DIM, WINDOW = 16, 8, 256, 1024
# the engine's attention as it runs on GPUs without the softmax kernel: compiled softmax
ATTENTION = fast_ops.Attention(torch.compile(fast_ops.masked_softmax))


class SlidingLayer(torch.nn.Module):
    sliding_window = WINDOW  # what fast_ops.Attention asks the module


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--sweep", action="store_true", help="the FP8 kernels' settings too")
    parser.add_argument("--out", type=Path, default=Path("decode-attention.json"))
    args = parser.parse_args()
    write_rows(args.out, args.batches, lambda batch: measure(batch, args.sweep))


def measure(batch: int, sweep_kernel: bool) -> dict:
    module, scale = SlidingLayer(), HEAD_DIM**-0.5
    shape = (batch + 1, KV_HEADS, WINDOW, HEAD_DIM)  # slots, as the cache keeps them
    caches = [(torch.randn(shape, device="cuda", dtype=torch.bfloat16),
               torch.randn(shape, device="cuda", dtype=torch.bfloat16))
              for _ in range(LAYERS)]  # fmt: skip
    fp8_caches = [(fit(k, FP8), fit(v, FP8)) for k, v in caches]
    query = torch.randn(batch, HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(batch, 1, 1, WINDOW, dtype=torch.bool, device="cuda")

    def run(stored) -> None:
        for key, value in stored:
            ATTENTION(module, query, key[:batch], value[:batch], mask, scale)

    row: dict = {"batch": batch, "parts": decode_attention.num_parts(batch, KV_HEADS, WINDOW)}
    for name, stored in (("bf16", caches), ("fp8", fp8_caches)):
        key, value = stored[0][0][:batch], stored[0][1][:batch]
        got, _ = ATTENTION(module, query, key, value, mask, scale)
        expected = decode_attention.reference_attention(query, key, value, mask, scale)
        row[f"{name}_error"] = relative(got, expected)
        ms = graph_ms(lambda stored=stored: run(stored))
        row[f"{name}_ms"] = round(ms, 4)
        row[f"{name}_tb_per_s"] = round(2 * key.numel() * key.element_size() / ms / 1e9, 2)
    if sweep_kernel:
        row.update(sweep(batch, run, fp8_caches))
    return row


def sweep(batch: int, run, fp8_caches) -> dict:
    names = ("MIN_PROGRAMS", "BLOCK_L", "WARPS", "STAGES")
    defaults = [getattr(decode_attention, name) for name in names]
    timings = []
    for programs, block, (warps, stages) in itertools.product(
        (256, 512, 1024), (32, 64, 128), ((4, 2), (4, 3), (8, 3))
    ):
        if batch == 1 and block > 32:
            continue  # one row is bound by latency: small blocks
        setting = (programs, block, warps, stages)
        for name, value in zip(names, setting, strict=True):
            setattr(decode_attention, name, value)
        timings.append((round(graph_ms(lambda: run(fp8_caches)), 4), *setting))
    for name, value in zip(names, defaults, strict=True):
        setattr(decode_attention, name, value)
    return {"fp8_sweep_ms_" + "_".join(name.lower() for name in names): sorted(timings)[:10]}


if __name__ == "__main__":
    main()
