"""The attention kernels: a decode step's masked softmax (kernels.softmax) against the
torch one it replaces; its attention over FP8 keys and values and after a kept prefix
(kernels.decode_attention) against the matmuls; a prompt's attention
(kernels.prompt_attention) against SDPA with the mask and fast_ops' flash path."""

from __future__ import annotations

import itertools

import torch

from inference.runtime.gemma4 import fast_ops
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kernels import decode_attention as decode_kernel
from inference.runtime.kernels import prompt_attention as prompt_kernel
from inference.runtime.kernels import softmax as softmax_kernel
from inference.runtime.kv_cache import fit
from tools.check_kernels import Bench, relative

DECODE_SETTINGS = ("MIN_PROGRAMS", "BLOCK_L", "WARPS", "STAGES")


def compiled(bench: Bench, fn):
    """fn as the engine runs it without the kernel: compiled on GPUs."""
    return torch.compile(fn) if bench.cuda else fn


class SlidingLayer(torch.nn.Module):
    """What fast_ops.Attention asks of the layer it attends for."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.sliding_window = window
        self.layer_idx = 0


def decode_attention(bench: Bench, sweep: bool):
    """measure(rows): a sliding layer's decode step over its ring; bytes of keys and
    values read per second."""
    text = bench.text
    heads, kv_heads, dim, window = (text[k] for k in (
        "num_attention_heads", "num_key_value_heads", "head_dim", "sliding_window"))  # fmt: skip
    # the system prompt, kept once (EnginePaths.kept_prefix_positions): whole blocks
    kept = 512 if window >= 1024 else decode_kernel.BLOCK_L
    attention = fast_ops.Attention(compiled(bench, fast_ops.masked_softmax))
    after_prefix = softmax_kernel.masked_softmax_after_prefix
    module, scale = SlidingLayer(window), dim**-0.5

    def measure(rows: int) -> dict:
        rings = [tuple(bench.randn(rows, kv_heads, window, dim) for _ in range(2))
                 for _ in range(bench.layers)]  # fmt: skip
        fp8_rings = [(fit(k, FP8), fit(v, FP8)) for k, v in rings]
        prefixes = [tuple(bench.randn(1, kv_heads, kept, dim) for _ in range(2))
                    for _ in range(bench.layers)]  # fmt: skip
        with_prefix = [(k, v, p) for (k, v), p in zip(rings, prefixes, strict=True)]
        query = bench.randn(rows, heads, 1, dim)
        mask = torch.rand(rows, 1, 1, kept + window, device=bench.device) < 0.9
        own_mask = mask[..., kept:]
        ways = {  # name: (attention of one layer, its tensors per layer, its mask)
            "bf16 matmuls": (lambda k, v, m: attention(module, query, k, v, m, scale)[0],
                             rings, own_mask),
            "fp8 kernel": (lambda k, v, m: decode_kernel.decode_attention(query, k, v, m, scale),
                           fp8_rings, own_mask),
            "bf16 after the kept prefix, matmuls": (
                lambda k, v, m, p: fast_ops.attention_after_prefix(query, k, v, p, m, scale,
                                                                   after_prefix),
                with_prefix, mask),
            "bf16 after the kept prefix, kernel": (
                lambda k, v, m, p: decode_kernel.decode_attention(query, k, v, m, scale, p),
                with_prefix, mask),
        }  # fmt: skip
        row: dict = {"rows": rows, "parts": decode_kernel.num_parts(rows, kv_heads, window)}
        for name, (attend, layers, attended) in ways.items():
            key, value, *prefix = layers[0]
            if prefix:
                key, value = (torch.cat([p.expand(rows, -1, -1, -1), t], dim=2)
                              for p, t in zip(prefix[0], (key, value), strict=True))  # fmt: skip
            expected = decode_kernel.reference_attention(query, key, value, attended, scale)
            row[f"{name} error"] = relative(attend(*layers[0][:2], attended, *prefix), expected)
            ms = row[f"{name} ms"] = bench.ms(
                lambda attend=attend, layers=layers, attended=attended: [
                    attend(*stored[:2], attended, *stored[2:]) for stored in layers
                ]
            )
            read = sum(t.numel() * t.element_size() for t in layers[0][:2])
            row[f"{name} TB/s"] = round(read / ms / 1e9, 2)
        if sweep:
            attend, layers, attended = ways["fp8 kernel"]
            row["sweep fp8 kernel (ms, " + ", ".join(DECODE_SETTINGS) + ")"] = decode_sweep(
                bench, lambda: [attend(k, v, attended) for k, v in layers], rows
            )
        return row

    return measure


def decode_sweep(bench: Bench, run, rows: int) -> list:
    defaults = [getattr(decode_kernel, name) for name in DECODE_SETTINGS]
    settings = [
        (programs, block, warps, stages)
        for programs, block, (warps, stages) in itertools.product(
            (256, 512, 1024), (32, 64, 128), ((4, 2), (4, 3), (8, 3)))
        if rows > 1 or block == 32  # one row is bound by latency: small blocks
    ]  # fmt: skip

    def run_with(setting) -> None:
        for name, value in zip(DECODE_SETTINGS, setting, strict=True):
            setattr(decode_kernel, name, value)
        run()

    try:
        return bench.sweep(run_with, settings)[:8]
    finally:
        for name, value in zip(DECODE_SETTINGS, defaults, strict=True):
            setattr(decode_kernel, name, value)


def softmax(bench: Bench, sweep: bool):
    """measure(rows): a sliding layer's scores over its window, a global layer's over 1.25
    and 4 windows, and a sliding layer's after a kept prefix; µs per layer."""
    text = bench.text
    heads, window = text["num_attention_heads"], text["sliding_window"]
    sliding, wide = text["num_key_value_heads"], text["num_global_key_value_heads"]
    shapes = {f"sliding {window}": (sliding, window), f"global {window * 5 // 4}":
              (wide, window * 5 // 4), f"global {window * 4}": (wide, window * 4)}  # fmt: skip
    torch_ways = {"torch": compiled(bench, fast_ops.masked_softmax),
                  "torch after the kept prefix":
                  compiled(bench, fast_ops.masked_softmax_after_prefix)}  # fmt: skip

    def measure(rows: int) -> dict:
        row: dict = {"rows": rows}
        for shape, (kv_heads, length) in shapes.items():
            scores = [(bench.randn(rows, kv_heads, heads // kv_heads, length) * 8)
                      for _ in range(bench.layers)]  # fmt: skip
            visible = torch.randint(length // 2, length + 1, (rows, 1), device=bench.device)
            mask = (torch.arange(length, device=bench.device) < visible)[:, None, None, :]
            expected = fast_ops.masked_softmax(scores[0].float(), mask, 0.0625)
            for name, way in (("torch", torch_ways["torch"]),
                              ("kernel", softmax_kernel.masked_softmax)):  # fmt: skip
                row[f"{shape} {name} error"] = relative(way(scores[0], mask, 0.0625), expected)
                row[f"{shape} {name} µs"] = round(1000 * bench.ms(
                    lambda way=way, scores=scores, mask=mask: [
                        way(s, mask, 0.0625) for s in scores]), 2)  # fmt: skip
        kept = window // 2  # the system prompt, kept once
        pairs = [(bench.randn(sliding, rows * (heads // sliding), kept) * 8,
                  bench.randn(rows, sliding, heads // sliding, window) * 8)
                 for _ in range(bench.layers)]  # fmt: skip
        mask = torch.rand(rows, 1, 1, kept + window, device=bench.device) < 0.7
        expected = fast_ops.masked_softmax_after_prefix(*(s.float() for s in pairs[0]), mask,
                                                        0.0625)  # fmt: skip
        for name, way in (("torch", torch_ways["torch after the kept prefix"]),
                          ("kernel", softmax_kernel.masked_softmax_after_prefix)):  # fmt: skip
            got = way(*pairs[0], mask, 0.0625)
            row[f"after the kept prefix {name} error"] = max(
                relative(a, b) for a, b in zip(got, expected, strict=True)
            )
            row[f"after the kept prefix {name} µs"] = round(1000 * bench.ms(
                lambda way=way: [way(*s, mask, 0.0625) for s in pairs]), 2)  # fmt: skip
        return row

    return measure


def prompt_attention(bench: Bench, sweep: bool):
    """measure(prompts): one sliding and one global layer of a prefill of `prompts` photo
    prompts after the cached system prompt."""
    text = bench.text
    heads, window = text["num_attention_heads"], text["sliding_window"]
    # full size: 485 prompt tokens (280 of a photo) after the 488 of the system prompt
    length, prefix = (485, 488) if window >= 1024 else (window + 8, window // 2)
    layers = {
        "sliding": (text["num_key_value_heads"], text["head_dim"], window),
        "global": (text["num_global_key_value_heads"], text["global_head_dim"], 0),
    }

    def measure(prompts: int) -> dict:
        row: dict = {"prompts": prompts, "tokens": length, "after": prefix}
        for layer, (kv_heads, dim, layer_window) in layers.items():
            row.update(prompt_layer(bench, prompts, heads, kv_heads, dim, layer_window, layer,
                                    prefix, length, sweep))  # fmt: skip
        return row

    return measure


def prompt_layer(bench: Bench, batch, heads, kv_heads, dim, window, layer, prefix, length,
                 sweep) -> dict:  # fmt: skip
    query = bench.randn(batch, length, heads, dim).transpose(1, 2)  # a view, as layers give
    key, value = (bench.randn(batch, kv_heads, prefix + length, dim) for _ in range(2))
    for t in (key, value):
        t[1:, :, :prefix] = t[:1, :, :prefix]  # the same system prompt
    shared = (key[:1, :, :prefix], value[:1, :, :prefix])  # as the prefix cache holds it
    spans = [[(5, 5 + length * 3 // 5)] if window else []] * batch  # global layers: causal
    ends = fast_ops.visible_ends(spans, prefix, length).to(bench.device) if window else None
    scale = dim**-0.5
    expected = prompt_kernel.reference_attention(query, key, value, ends, scale, window)
    mask = reference_mask(ends, prefix, length, window, bench.device, batch)
    ways = {
        "kernel": lambda: prompt_kernel.prompt_attention(query, key, value, ends, scale, None,
                                                         window),
        "kernel, the prefix apart": lambda: prompt_kernel.prompt_attention(
            query, key[:, :, prefix:], value[:, :, prefix:], ends, scale, shared, window),
        "SDPA with the mask": lambda: torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, scale=scale, enable_gqa=True).transpose(1, 2),
    }  # fmt: skip
    if window and prefix + length <= window and bench.cuda:  # fast_ops' path without a kernel
        ways["flash, a pass per image"] = lambda: fast_ops.prompt_attention(
            query, key, value, spans, scale
        )
    row: dict = {}
    for name, run in ways.items():
        row[f"{layer} {name} error"] = relative(run(), expected)
        row[f"{layer} {name} ms"] = bench.ms(lambda run=run: [run() for _ in range(bench.layers)])
    if sweep:
        block_d = max(16, 1 << (dim - 1).bit_length())
        if block_d <= 256:  # around the best of a wider sweep (64-128 x 32-64 x 4-8 x 1-3)
            settings = list(itertools.product((128,), (32, 64), (8,), (2, 3)))
        else:  # a tile of 512-wide keys and values per stage: smaller tiles
            settings = list(itertools.product((32, 64), (16, 32), (4, 8), (1, 2)))
        default = prompt_kernel.BLOCKS.get(block_d)

        def run_with(setting) -> None:
            prompt_kernel.BLOCKS[block_d] = setting
            for _ in range(bench.layers):
                ways["kernel, the prefix apart"]()

        try:
            row[f"sweep {layer} kernel (ms, BLOCK_M, BLOCK_N, warps, stages)"] = bench.sweep(
                run_with, settings)[:8]  # fmt: skip
        finally:
            if default is None:
                del prompt_kernel.BLOCKS[block_d]
            else:
                prompt_kernel.BLOCKS[block_d] = default
    return row


def reference_mask(ends, prefix: int, length: int, window: int, device, batch: int):
    """[B, 1, L, S] of what each prompt query sees (the kernel's rule, made explicit)."""
    keys = torch.arange(prefix + length, device=device)
    queries = keys[prefix:]
    if ends is None:
        mask = (keys[None, :] <= queries[:, None]).expand(batch, -1, -1)
    else:
        mask = keys[None, None, :] < ends[:, :, None]
    if window:
        mask = mask & (keys[None, :] > queries[:, None] - window)[None]
    return mask[:, None]
