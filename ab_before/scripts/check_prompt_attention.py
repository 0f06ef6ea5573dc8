"""Prompt attention of sliding layers after a cached prefix, on the GPU, against a float32
reference with the explicit mask (causal after the prefix, or within the same image), at
Gemma 4 26B-A4B's sliding-layer shapes; and the vision tower's attention over packed
photos (`vision.photo_attention`) against SDPA photo by photo. Prints and writes the
largest differences relative to the reference's largest value (bf16: ~1e-2 is rounding).

    python3 scripts/check_prompt_attention.py --out bench-out/prompt-attention.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from inference.runtime import fast_ops, vision


def reference(query, key, value, spans, scaling):
    batch, _, length, _ = query.shape
    total = key.shape[2]
    prefix = total - length
    mask = torch.ones(length, total, dtype=torch.bool, device=query.device).tril(prefix)
    mask = mask.repeat(batch, 1, 1)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            mask[row, start:end, prefix + start : prefix + end] = True
    output = F.scaled_dot_product_attention(
        query.float(), key.float(), value.float(), attn_mask=mask[:, None], scale=scaling,
        enable_gqa=True,
    )  # fmt: skip
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


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got.float() - expected).abs().max() / expected.abs().max())


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
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
