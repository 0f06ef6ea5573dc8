"""The sliding layers' decode attention on the GPU at Gemma 4 26B-A4B's sizes (16 query
heads, 8 KV heads of 256, a ring of 1,024 positions): the engine's bf16 path (two batched
matmuls around the compiled masked softmax, fast_ops) against the FP8 kernels
(attention_kernel), per layer, with the error against float32 attention and the bytes of
keys and values read per second; then the kernels over bf16 keys and values, and both
dtypes with a shared prefix of 488 positions read from one row (as the engine does for the
system prompt). Each timing is a CUDA graph replaying 8 layers with their own caches.
With --sweep, the FP8 kernels' settings: programs per call (parts of the ring), positions
per loop step, warps and pipeline stages.

    python scripts/check_decode_attention.py [--batches 1,8,64] [--sweep] [--out F.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from contextlib import nullcontext
from pathlib import Path

import torch
from check_moe_kernel import LAYERS, graph_ms

from inference.runtime import attention_kernel, fast_ops
from inference.runtime.fp8_experts import FP8
from inference.runtime.kv_cache import fit

HEADS, KV_HEADS, HEAD_DIM, WINDOW = 16, 8, 256, 1024
PREFIX = 488  # the bench's system prompt, in positions


class SlidingLayer(torch.nn.Module):
    sliding_window = WINDOW  # what fast_ops.decode_attention asks the module

    def __init__(self, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--sweep", action="store_true", help="the FP8 kernels' settings too")
    parser.add_argument("--out", type=Path, default=Path("decode-attention.json"))
    args = parser.parse_args()
    fast_ops.decode_probs = torch.compile(fast_ops.masked_softmax)  # as the engine does
    result: dict = {"device": torch.cuda.get_device_name(), "rows": []}
    for batch in [int(b) for b in args.batches.split(",")]:
        row = measure(batch, args.sweep)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        args.out.write_text(json.dumps(result, indent=1))


def measure(batch: int, sweep_kernel: bool) -> dict:
    modules, scale = [SlidingLayer(i) for i in range(LAYERS)], HEAD_DIM**-0.5
    shape = (batch + 1, KV_HEADS, WINDOW, HEAD_DIM)  # slots, as the cache keeps them
    caches = [(torch.randn(shape, device="cuda", dtype=torch.bfloat16),
               torch.randn(shape, device="cuda", dtype=torch.bfloat16))
              for _ in range(LAYERS)]  # fmt: skip
    fp8_caches = [(fit(k, FP8), fit(v, FP8)) for k, v in caches]
    query = torch.randn(batch, HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(batch, 1, 1, WINDOW, dtype=torch.bool, device="cuda")
    own = mask.to(torch.uint8)  # codes: every position from the row's own slot
    common = own.clone()
    common[..., :PREFIX] = 2  # the shared prefix's positions from its one copy

    variants = {  # name: (caches, mask, the row holding the shared prefix: the spare one)
        "bf16": (caches, mask, None),
        "bf16_kernel": (caches, own, None),
        "bf16_shared_prefix": (caches, common, batch),
        "fp8": (fp8_caches, mask, None),
        "fp8_shared_prefix": (fp8_caches, common, batch),
    }

    def run(stored, codes, shared) -> torch.Tensor:
        with fast_ops.shared_prefix(shared) if shared is not None else nullcontext():
            for module, (key, value) in zip(modules, stored, strict=True):
                out, _ = fast_ops.decode_attention(
                    module, query, key[:batch], value[:batch], codes, scale
                )
        return out

    row: dict = {"batch": batch, "parts": attention_kernel.num_parts(batch, KV_HEADS, WINDOW),
                 "shared_prefix": PREFIX}  # fmt: skip
    for name, (stored, codes, shared) in variants.items():
        key, value = stored[-1][0][:batch].float(), stored[-1][1][:batch].float()
        if shared is not None:  # what the rows attend to: the shared row's at the prefix
            key[:, :, :PREFIX] = stored[-1][0][shared, :, :PREFIX].float()
            value[:, :, :PREFIX] = stored[-1][1][shared, :, :PREFIX].float()
        expected = attention_kernel.reference_attention(query, key, value, mask, scale)
        got = run(stored, codes, shared)
        row[f"{name}_error"] = round(
            ((got.float() - expected).abs().max() / expected.abs().max()).item(), 5
        )
        row[f"{name}_ms"] = round(graph_ms(lambda v=variants[name]: run(*v)), 4)
    ring_bytes = 2 * caches[0][0][:batch].numel()
    row["bf16_tb_per_s"] = round(ring_bytes * 2 / row["bf16_ms"] / 1e9, 2)
    row["fp8_tb_per_s"] = round(ring_bytes / row["fp8_ms"] / 1e9, 2)
    if not sweep_kernel:
        return row
    names = ("MIN_PROGRAMS", "BLOCK_L", "WARPS", "STAGES")
    defaults = [getattr(attention_kernel, name) for name in names]
    sweep = []
    for programs, block, (warps, stages) in itertools.product(
        (256, 512, 1024), (32, 64, 128), ((4, 2), (4, 3), (8, 3))
    ):
        if batch == 1 and block > 32:
            continue  # one row is bound by latency: small blocks
        setting = (programs, block, warps, stages)
        for name, value in zip(names, setting, strict=True):
            setattr(attention_kernel, name, value)
        sweep.append((round(graph_ms(lambda: run(fp8_caches, mask, None)), 4), *setting))
    for name, value in zip(names, defaults, strict=True):
        setattr(attention_kernel, name, value)
    row["fp8_sweep_ms_" + "_".join(name.lower() for name in names)] = sorted(sweep)[:10]
    return row


if __name__ == "__main__":
    main()
