"""Prompt attention of sliding layers after a cached prefix, on the GPU, against a float32
reference with the explicit mask (causal after the prefix, or within the same image), at
Gemma 4 26B-A4B's sliding-layer shapes; and the vision tower's attention over packed
photos (`vision.photo_attention`) against SDPA photo by photo. Prints and writes the
largest differences relative to the reference's largest value (bf16: ~1e-2 is rounding),
and, for one sliding and one global layer of an 8-photo prefill, the GPU ms of each way
to attend (fast_ops' flash path, the Triton kernel with the prefix's keys and values
joined to the prompts' or apart, SDPA with the mask: its kernels, and cuDNN's) and of the
join.

    python3 scripts/check_prompt_attention.py --out bench-out/prompt-attention.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from check_moe_kernel import relative
from time_photo_attention import timed_ms
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from inference.runtime.gemma4 import fast_ops, vision
from inference.runtime.kernels import prompt_attention as kernel


def prompt_mask(batch: int, length: int, total: int, spans, device) -> torch.Tensor:
    """[B, 1, L, S]: causal after the prefix, or both tokens in the same image."""
    prefix = total - length
    mask = torch.ones(length, total, dtype=torch.bool, device=device).tril(prefix)
    mask = mask.repeat(batch, 1, 1)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            mask[row, start:end, prefix + start : prefix + end] = True
    return mask[:, None]


def reference(query, key, value, spans, scaling):
    mask = prompt_mask(query.shape[0], query.shape[2], key.shape[2], spans, query.device)
    output = F.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=mask, scale=scaling,
        enable_gqa=True,
    )  # fmt: skip
    return output.transpose(1, 2)


def timings(kv_heads: int, head_dim: int) -> dict:
    """One layer of an 8-photo prefill after the system prompt (sliding: 8 KV heads of 256;
    global: 2 of 512): error against float32 and GPU ms of each way to attend."""
    batch, heads, prefix, length = 8, 16, 488, 485
    query = torch.randn(batch, length, heads, head_dim, device="cuda", dtype=torch.bfloat16)
    query = query.transpose(1, 2)  # as the layers give it: a view of [B, L, H, D]
    key, value = torch.randn(2, batch, kv_heads, prefix + length, head_dim, device="cuda",
                             dtype=torch.bfloat16)  # fmt: skip
    key[1:, :, :prefix], value[1:, :, :prefix] = key[:1, :, :prefix], value[:1, :, :prefix]
    shared = (key[:1, :, :prefix], value[:1, :, :prefix])  # as the prefix cache holds them
    # Gemma 4's global layers have no image rule: causal
    spans = [[(5, 285)] if head_dim <= 256 else []] * batch
    scaling = 1.0 / head_dim**0.5
    mask = prompt_mask(batch, length, prefix + length, spans, "cuda")
    expected = reference(query, key, value, spans, scaling)
    ways = {
        "SDPA with the mask (flash, efficient, math)": lambda: sdpa(
            PREFILL_BACKENDS, query, key, value, mask, scaling),
        "SDPA with the mask, cuDNN": lambda: sdpa(
            [SDPBackend.CUDNN_ATTENTION], query, key, value, mask, scaling),
    }  # fmt: skip
    if head_dim <= 256:
        ways["prompt_attention (flash, a pass per image)"] = lambda: fast_ops.prompt_attention(
            query, key, value, spans, scaling
        )
    ends = fast_ops.visible_ends(spans, prefix, length).cuda() if head_dim <= 256 else None
    ways["prompt_attention_kernel (Triton, one pass)"] = lambda: kernel.prompt_attention(
        query, key, value, ends, scaling
    )
    ways["prompt_attention_kernel, the prefix apart"] = lambda: kernel.prompt_attention(
        query, key[:, :, prefix:], value[:, :, prefix:], ends, scaling, shared
    )
    joins = {  # what the prefix apart saves: the prefix joined to the prompts' K/V
        "the join (prefix and prompts' keys and values)": lambda: [
            torch.cat([part.expand(batch, -1, -1, -1), whole[:, :, prefix:]], dim=2)
            for part, whole in zip(shared, (key, value), strict=True)
        ]
    }
    row: dict = {}
    for name, run in ways.items():
        try:
            row[name] = {"error": relative(run(), expected), "ms": timed_ms(run)}
        except Exception as exc:  # a kernel that refuses these shapes
            row[name] = f"{type(exc).__name__}: {exc}"[:300]
    for name, run in joins.items():
        row[name] = {"ms": timed_ms(run)}
    row["prompt_attention_kernel sweep (ms, BLOCK_M, BLOCK_N, warps, stages)"] = sweep(
        ways["prompt_attention_kernel (Triton, one pass)"], head_dim
    )
    return row


def sweep(run, head_dim: int) -> list:
    default, timings = kernel.BLOCKS[head_dim], []
    if head_dim <= 256:  # around the best of a wider sweep (64-128 x 32-64 x 4-8 x 1-3)
        settings = itertools.product((128,), (32, 64), (8,), (2, 3))
    else:  # a tile of 512-wide keys and values per stage: smaller tiles
        settings = itertools.product((32, 64), (16, 32), (4, 8), (1, 2))
    for setting in settings:
        kernel.BLOCKS[head_dim] = setting
        try:
            timings.append((timed_ms(run, 10), *setting))
        except Exception:  # e.g. out of shared memory
            continue
    kernel.BLOCKS[head_dim] = default
    return sorted(timings)[:8]


PREFILL_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(backends, query, key, value, mask, scaling) -> torch.Tensor:
    with sdpa_kernel(backends):
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True
        )
    return output.transpose(1, 2)


def photo_attention_difference(
    device: str, dtype: torch.dtype, lengths: tuple[int, ...] = (2520, 1764, 2088)
) -> float:
    """Three packed photos (vision heads and head_dim) against SDPA on each in float32."""
    heads, head_dim = 16, 72
    query, key, value = torch.randn(3, 1, heads, sum(lengths), head_dim, device=device,
                                    dtype=dtype)  # fmt: skip
    bounds = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
    got = vision.photo_attention(query, key, value, bounds, torch.tensor(lengths), 0.1)
    parts, start = [], 0
    for length in lengths:
        part = slice(start, start + length)
        parts.append(F.scaled_dot_product_attention(
            query[:, :, part].float(), key[:, :, part].float(), value[:, :, part].float(),
            scale=0.1).transpose(1, 2))  # fmt: skip
        start += length
    return relative(got, torch.cat(parts, dim=1))


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out/prompt-attention.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    batch, heads, kv_heads, head_dim, prefix, length = 4, 16, 8, 256, 488, 485
    device, dtype = "cuda", torch.bfloat16
    query = torch.randn(batch, heads, length, head_dim, device=device, dtype=dtype)
    key, value = torch.randn(2, batch, kv_heads, prefix + length, head_dim, device=device,
                             dtype=dtype)  # fmt: skip
    spans = [[(5, 287)]] * batch
    expected = reference(query, key, value, spans, 1.0 / head_dim**0.5)
    report = {
        "prompt_attention": relative(
            fast_ops.prompt_attention(query, key, value, spans, 1.0 / head_dim**0.5), expected
        )
    }
    report["photo_attention (vision, packed)"] = photo_attention_difference(device, dtype)
    report["photo_attention (vision, same size)"] = photo_attention_difference(
        device, dtype, (2520, 2520, 2520)
    )
    no_images = reference(query, key, value, [[]] * batch, 1.0 / head_dim**0.5)
    causal = causal_lower_right(length, prefix + length)
    for name, attention in (
        ("varlen flash, causal after the prefix", fast_ops.causal_after_prefix),
        ("SDPA with causal_lower_right", lambda q, k, v, s: F.scaled_dot_product_attention(
            q, k, v, attn_mask=causal, scale=s, enable_gqa=True)),
    ):  # fmt: skip
        try:
            got = attention(query, key, value, 1.0 / head_dim**0.5).transpose(1, 2)
            report[name] = relative(got, no_images)
        except Exception as exc:  # a kernel that refuses these shapes
            report[name] = f"{type(exc).__name__}: {exc}"[:300]
    report["sliding layer, 8 photos after the prefix"] = timings(8, 256)
    report["global layer, 8 photos after the prefix"] = timings(2, 512)
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
