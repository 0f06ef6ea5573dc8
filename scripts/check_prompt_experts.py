"""Prompts' experts on the GPU at Gemma 4 26B-A4B's sizes: the Triton grouped GEMMs
(kernels.moe_prompt) against torch's grouped_mm path (moe.grouped_experts), in bf16
and with FP8 weights (grouped_mm after dequantizing the layer, eagerly), per layer; error
against a float32 reference; sweeps of the Triton kernels' block sizes.
Each timing is a CUDA graph replaying 8 layers with their own weights.

    python scripts/check_prompt_experts.py [--tokens 488,3904,7808] [--sweep-tokens 3904]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from check_moe_kernel import graph_ms, make_experts, quantized, relative, routing
from transformers import Gemma4TextConfig

from inference.runtime.gemma4 import fp8_experts
from inference.runtime.kernels import moe, moe_prompt
from tools.tiny import FULL_SIZE_TEXT_CONFIG

# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
CANDIDATES = [
    (64, 64, 64, 4, 3), (64, 128, 64, 4, 3), (64, 64, 128, 4, 3), (64, 128, 64, 8, 4),
    (128, 64, 64, 4, 3), (128, 64, 64, 8, 3), (128, 64, 64, 8, 4), (128, 128, 64, 8, 3),
    (128, 64, 128, 8, 3), (128, 128, 32, 8, 4), (128, 256, 64, 8, 3), (256, 64, 64, 8, 3),
]  # fmt: skip


def reference(hidden, index, weights, gate_up_proj, down_proj) -> torch.Tensor:
    """float32, one expert at a time over all its tokens."""
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for expert in range(gate_up_proj.shape[0]):
        token, k = (index == expert).nonzero(as_tuple=True)
        if token.numel():
            gate, up = (hidden[token].float() @ gate_up_proj[expert].float().T).chunk(2, dim=-1)
            act = torch.nn.functional.gelu(gate, approximate="tanh") * up
            rows = act @ down_proj[expert].float().T
            out.index_add_(0, token, rows * weights[token, k, None].float())
    return out


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", default="488,3904,7808")
    parser.add_argument("--sweep-tokens", default="3904")
    parser.add_argument("--out", type=Path, default=Path("prompt-experts.json"))
    args = parser.parse_args()
    config = Gemma4TextConfig(**FULL_SIZE_TEXT_CONFIG)
    layers = make_experts(config)
    fp8_layers = quantized(layers)
    bf16_layers = [(e.gate_up_proj, e.down_proj, None, None) for e in layers]
    result: dict = {"device": torch.cuda.get_device_name(), "rows": []}
    result["self_check"] = moe_prompt.works_on(torch.device("cuda"))
    print("self check:", result["self_check"], flush=True)
    sweep_at = {int(t) for t in args.sweep_tokens.split(",") if t}
    for tokens in [int(t) for t in args.tokens.split(",")]:
        row, inputs, tflop = measure(layers, bf16_layers, fp8_layers, config, tokens)
        if tokens in sweep_at:
            for name, stored in (("bf16", bf16_layers), ("fp8", fp8_layers)):
                row[f"sweep_{name}"] = sweep(stored, *inputs, tflop=tflop)
        result["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("sweep")}))
        for kind in ("sweep_bf16", "sweep_fp8"):
            for kernel, timings in row.get(kind, {}).items():
                print(f"  {kind} {kernel} best: {timings[:4]}", flush=True)
        args.out.write_text(json.dumps(result, indent=1))


def routed(tokens: int, config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(tokens)
    hidden = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16)
    weights, index = routing(tokens, config)
    return hidden, index, weights


def measure(layers, bf16_layers, fp8_layers, config, tokens: int):
    hidden, index, weights = routed(tokens, config)
    first = layers[0]
    pairs = tokens * config.top_k_experts
    tflop = 2 * pairs * 3 * config.hidden_size * config.moe_intermediate_size / 1e12
    expected = reference(hidden, index, weights, first.gate_up_proj, first.down_proj)
    gate_up, down, gate_up_scale, down_scale = fp8_layers[0]
    dequantized = {
        "gate_up_proj": fp8_experts.dequantize(gate_up, gate_up_scale, hidden.dtype),
        "down_proj": fp8_experts.dequantize(down, down_scale, hidden.dtype),
    }
    expected_fp8 = reference(hidden, index, weights, *dequantized.values())
    row: dict = {"tokens": tokens, "tflop_per_layer": round(tflop, 4)}
    row["grouped_mm_error"] = relative(
        moe.grouped_experts(hidden, index, weights, *bf16_layers[0]), expected
    )
    row["triton_error"] = relative(
        moe_prompt.prompt_experts(hidden, index, weights, *bf16_layers[0]), expected
    )
    triton_fp8 = moe_prompt.prompt_experts(hidden, index, weights, *fp8_layers[0])
    row["triton_fp8_error"] = relative(triton_fp8, expected_fp8)
    row["triton_fp8_vs_bf16_mean"] = round(
        ((triton_fp8.float() - expected).abs().mean() / expected.abs().mean()).item(), 5
    )

    def run_all(experts, stored_layers) -> None:
        for stored in stored_layers:
            experts(hidden, index, weights, *stored)

    grouped, triton_ = moe.grouped_experts, moe_prompt.prompt_experts
    timings = {
        "grouped_mm_ms": graph_ms(lambda: run_all(grouped, bf16_layers)),
        "triton_ms": graph_ms(lambda: run_all(triton_, bf16_layers)),
        "grouped_mm_fp8_eager_dequantize_ms": graph_ms(lambda: run_all(grouped, fp8_layers)),
        "triton_fp8_ms": graph_ms(lambda: run_all(triton_, fp8_layers)),
    }
    for name, ms in timings.items():
        row[name] = round(ms, 4)
        row[name.replace("_ms", "_tflop_s")] = round(tflop / ms * 1e3, 1)
    return row, (hidden, index, weights), tflop


def sweep(stored_layers, hidden, index, weights, tflop: float) -> dict:
    """Each kernel's block sizes, the other at its default: [(ms per layer, TFLOP/s of the
    pair, blocks)], best first."""
    out = {}
    for kernel in ("gate_up", "down"):
        timings = []
        for blocks in CANDIDATES:
            chosen = {f"{kernel}_blocks": blocks}

            def run(chosen=chosen) -> None:
                for stored in stored_layers:
                    moe_prompt.prompt_experts(hidden, index, weights, *stored, **chosen)

            try:
                ms = graph_ms(run)
                timings.append((round(ms, 4), round(tflop / ms * 1e3, 1), blocks))
            except Exception as exc:  # e.g. out of shared memory for a block shape
                print(f"  {kernel} {blocks}: {type(exc).__name__}", flush=True)
        out[kernel] = sorted(timings)
    return out


if __name__ == "__main__":
    main()
