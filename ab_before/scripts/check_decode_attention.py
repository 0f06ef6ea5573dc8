"""The sliding layers' decode attention on the GPU at Gemma 4 26B-A4B's sizes (16 query
heads, 8 KV heads of 256, a ring of 1,024 positions): the engine's bf16 path (two batched
matmuls around the compiled masked softmax, fast_ops) against the FP8 kernels
(attention_kernel), per layer, with the error against float32 attention and the bytes of
keys and values read per second; and the cascade (fast_ops.cascade_attention): the system
prompt's 488 positions read once for all rows, each row's own 768. Each timing is a CUDA
graph replaying 8 layers with their own caches. With --sweep, the FP8 kernels' settings:
programs per call (parts of the ring), positions per loop step, warps and pipeline stages.

    python scripts/check_decode_attention.py [--batches 1,8,64] [--sweep] [--out F.json]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from check_moe_kernel import LAYERS, graph_ms, write_rows

from inference.runtime import attention_kernel, fast_ops
from inference.runtime.fp8_experts import FP8
from inference.runtime.kv_cache import fit

HEADS, KV_HEADS, HEAD_DIM, WINDOW = 16, 8, 256, 1024
PREFIX = 488  # the bench's system prompt, in positions
OWN = 768  # a photo answer's own positions after it (485-613), as an attended-length bucket


class SlidingLayer(torch.nn.Module):
    sliding_window = WINDOW  # what fast_ops.decode_attention asks the module


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--sweep", action="store_true", help="the FP8 kernels' settings too")
    parser.add_argument("--out", type=Path, default=Path("decode-attention.json"))
    args = parser.parse_args()
    fast_ops.decode_probs = torch.compile(fast_ops.masked_softmax)  # as the engine does
    fast_ops.cascade_probs = torch.compile(fast_ops.cascade_probs)
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
            fast_ops.decode_attention(module, query, key[:batch], value[:batch], mask, scale)

    row: dict = {"batch": batch, "parts": attention_kernel.num_parts(batch, KV_HEADS, WINDOW)}
    for name, stored in (("bf16", caches), ("fp8", fp8_caches)):
        key, value = stored[0][0][:batch], stored[0][1][:batch]
        got, _ = fast_ops.decode_attention(module, query, key, value, mask, scale)
        expected = attention_kernel.reference_attention(query, key, value, mask, scale)
        row[f"{name}_error"] = round(
            ((got.float() - expected).abs().max() / expected.abs().max()).item(), 5
        )
        ms = graph_ms(lambda stored=stored: run(stored))
        row[f"{name}_ms"] = round(ms, 4)
        row[f"{name}_tb_per_s"] = round(2 * key.numel() * key.element_size() / ms / 1e9, 2)
    row.update(measure_cascade(batch, query, caches, scale))
    if sweep_kernel:
        row.update(sweep(batch, run, fp8_caches))
    return row


def sweep(batch: int, run, fp8_caches) -> dict:
    names = ("MIN_PROGRAMS", "BLOCK_L", "WARPS", "STAGES")
    defaults = [getattr(attention_kernel, name) for name in names]
    timings = []
    for programs, block, (warps, stages) in itertools.product(
        (256, 512, 1024), (32, 64, 128), ((4, 2), (4, 3), (8, 3))
    ):
        if batch == 1 and block > 32:
            continue  # one row is bound by latency: small blocks
        setting = (programs, block, warps, stages)
        for name, value in zip(names, setting, strict=True):
            setattr(attention_kernel, name, value)
        timings.append((round(graph_ms(lambda: run(fp8_caches)), 4), *setting))
    for name, value in zip(names, defaults, strict=True):
        setattr(attention_kernel, name, value)
    return {"fp8_sweep_ms_" + "_".join(name.lower() for name in names): sorted(timings)[:10]}


def measure_cascade(batch: int, query, caches, scale: float) -> dict:
    """The system prompt's keys and values once per layer ([KV heads, PREFIX, D]), each
    row's own OWN positions from its slot (the first OWN of its ring)."""
    prefixes = [
        tuple(torch.randn(KV_HEADS, PREFIX, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
              for _ in range(2))
        for _ in range(LAYERS)
    ]  # fmt: skip
    own_mask = torch.ones(batch, 1, 1, OWN, dtype=torch.bool, device="cuda")
    prefix_mask = torch.ones(batch, 1, 1, PREFIX, dtype=torch.bool, device="cuda")

    def run() -> torch.Tensor:
        for (key, value), (prefix_key, prefix_value) in zip(caches, prefixes, strict=True):
            out = fast_ops.cascade_attention(
                query, key[:batch, :, :OWN], value[:batch, :, :OWN], own_mask, prefix_key,
                prefix_value, prefix_mask, scale,
            )  # fmt: skip
        return out

    key, value = caches[-1][0][:batch, :, :OWN], caches[-1][1][:batch, :, :OWN]
    prefix_key, prefix_value = (t.expand(batch, *t.shape) for t in prefixes[-1])
    expected = attention_kernel.reference_attention(
        query, torch.cat([prefix_key, key], 2), torch.cat([prefix_value, value], 2),
        torch.cat([prefix_mask, own_mask], -1), scale,
    )  # fmt: skip
    error = (run().float() - expected).abs().max() / expected.abs().max()
    ms = graph_ms(run)
    read = 2 * (key.numel() + prefixes[0][0].numel()) * key.element_size()  # K and V
    return {
        "bf16_cascade_error": round(error.item(), 5),
        "bf16_cascade_ms": round(ms, 4),
        "bf16_cascade_tb_per_s": round(read / ms / 1e9, 2),
    }


if __name__ == "__main__":
    main()
