"""The Triton experts kernels on the GPU, at Gemma 4 26B-A4B's sizes: error against a
float32 reference, then time per layer against transformers' grouped_mm experts, for
decode batches of 1-128 tokens (the per-pair kernels, and the expert-major ones that read
each expert once), and sweeps of the kernels' block sizes; the same kernels
with the weights in FP8 (fp8_experts): error against the reference on the dequantized
weights, difference to the bf16 result, time, and the time to dequantize a layer eagerly
(the engine's prompts dequantize inside the compiled layers, where inductor fuses it into one
pass: `scripts/profile_decode.py --prefill 8 --fp8-experts` times that). Each timing is a
CUDA graph replaying 8 layers with their own weights (no L2 reuse between layers).

    python scripts/check_moe_kernel.py [--out moe-kernel.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Gemma4TextConfig
from transformers.models.gemma4.modeling_gemma4 import Gemma4TextExperts

from inference.runtime.gemma4 import fp8_experts
from inference.runtime.kernels import moe
from tools.tiny import FULL_SIZE_TEXT_CONFIG

LAYERS = 8


def make_experts(config) -> list[Gemma4TextExperts]:
    out = []
    for _ in range(LAYERS):
        experts = Gemma4TextExperts(config).to("cuda", torch.bfloat16)
        torch.nn.init.normal_(experts.gate_up_proj, std=0.02)
        torch.nn.init.normal_(experts.down_proj, std=0.02)
        out.append(experts)
    return out


def quantized(layers: list[Gemma4TextExperts]) -> list[tuple[torch.Tensor, ...]]:
    """(gate_up FP8, down FP8, gate_up scales, down scales) of each layer."""
    out = []
    for e in layers:
        (gate_up, gate_up_scale), (down, down_scale) = map(
            fp8_experts.quantize, (e.gate_up_proj, e.down_proj)
        )
        out.append((gate_up, down, gate_up_scale, down_scale))
    return out


def routing(tokens: int, config) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.randn(tokens, config.num_experts, device="cuda").softmax(-1)
    weights, index = scores.topk(config.top_k_experts, dim=-1)
    return weights / weights.sum(-1, keepdim=True), index


def write_rows(out: Path, sizes: str, measure: Callable[[int], dict]) -> None:
    """measure(size) for each of the comma-separated sizes: printed, and the JSON (device,
    rows) rewritten after each, so a run cut short keeps its rows."""
    result: dict = {"device": torch.cuda.get_device_name(), "rows": []}
    for size in [int(s) for s in sizes.split(",") if s]:
        row = measure(size)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps(result, indent=1))


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference over the reference's largest value (5 digits)."""
    return round(((got.float() - expected).abs().max() / expected.abs().max()).item(), 5)


def graph_ms(fn, repeats: int = 20) -> float:
    """Milliseconds per call of fn() (which runs all LAYERS layers), divided per layer."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats / LAYERS


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", default="1,8,16,24,32,48,64,96,128")
    parser.add_argument("--sweep-tokens", default="8,64", help="block sweeps at these sizes")
    parser.add_argument(
        "--fused-sweep-tokens", default="", help="per-pair kernels' block sweeps at these sizes"
    )
    parser.add_argument("--out", type=Path, default=Path("moe-kernel.json"))
    args = parser.parse_args()
    config = Gemma4TextConfig(**FULL_SIZE_TEXT_CONFIG)
    config._experts_implementation = "grouped_mm"
    layers = make_experts(config)
    fp8_layers = quantized(layers)
    result: dict = {"device": torch.cuda.get_device_name(), "self_check": None, "rows": []}
    result["self_check"] = moe.works_on(torch.device("cuda"))
    sweep_at = {int(t) for t in args.sweep_tokens.split(",") if t}
    fused_sweep_at = {int(t) for t in args.fused_sweep_tokens.split(",") if t}
    print("self check:", result["self_check"])
    for tokens in [int(t) for t in args.tokens.split(",")]:
        sweeps = (tokens in sweep_at, tokens in fused_sweep_at)
        row = measure(layers, fp8_layers, config, tokens, *sweeps)
        result["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("sweep")}))
        for kind in ("sweep", "sweep_fp8", "sweep_fused", "sweep_fused_fp8"):
            for kernel, timings in row.get(kind, {}).items():
                print(f"  {kind} {kernel} best: {timings[:3]}")
        args.out.write_text(json.dumps(result, indent=1))


def measure(
    layers, fp8_layers, config, tokens: int, with_sweep: bool, with_fused_sweep: bool
) -> dict:
    hidden = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16)
    weights, index = routing(tokens, config)
    first = layers[0]
    expected = moe.reference_experts(hidden, index, weights, first.gate_up_proj, first.down_proj)
    fused = moe.fused_experts(hidden, index, weights, first.gate_up_proj, first.down_proj)
    major = moe.expert_major_experts(hidden, index, weights, first.gate_up_proj, first.down_proj)
    grouped = first(hidden, index, weights)
    scale = expected.abs().max()

    def fused_all() -> None:
        for e in layers:
            moe.fused_experts(hidden, index, weights, e.gate_up_proj, e.down_proj)

    def major_all() -> None:
        for e in layers:
            moe.expert_major_experts(hidden, index, weights, e.gate_up_proj, e.down_proj)

    row = {
        "tokens": tokens,
        "experts_touched": int(index.unique().numel()),
        "fused_error": round(((fused.float() - expected).abs().max() / scale).item(), 5),
        "grouped_mm_error": round(((grouped.float() - expected).abs().max() / scale).item(), 5),
        "grouped_mm_ms": graph_ms(lambda: [e(hidden, index, weights) for e in layers]),
        "fused_ms": graph_ms(fused_all),
        "expert_major_error": round(((major.float() - expected).abs().max() / scale).item(), 5),
        "expert_major_ms": graph_ms(major_all),
    }
    touched_bytes = row["experts_touched"] * 3 * config.hidden_size * 704 * 2
    row["fused_tb_per_s"] = round(touched_bytes / row["fused_ms"] / 1e9, 2)
    row["grouped_mm_tb_per_s"] = round(touched_bytes / row["grouped_mm_ms"] / 1e9, 2)
    row["expert_major_tb_per_s"] = round(touched_bytes / row["expert_major_ms"] / 1e9, 2)
    row.update(measure_fp8(fp8_layers, hidden, index, weights, expected, touched_bytes))
    if with_sweep:
        row["sweep"] = sweep(layers, hidden, index, weights)
        row["sweep_fp8"] = sweep(fp8_layers, hidden, index, weights)
    if with_fused_sweep:
        row["sweep_fused"] = sweep(layers, hidden, index, weights, fused=True)
        row["sweep_fused_fp8"] = sweep(fp8_layers, hidden, index, weights, fused=True)
    return row


def measure_fp8(fp8_layers, hidden, index, weights, bf16_expected, touched_bytes) -> dict:
    """The kernels on FP8 weights: error against the float32 reference on the dequantized
    weights (the kernels' own error) and against the bf16 weights' result (what FP8 costs)."""
    gate_up, down, gate_up_scale, down_scale = fp8_layers[0]
    expected = moe.reference_experts(
        hidden, index, weights, fp8_experts.dequantize(gate_up, gate_up_scale, hidden.dtype),
        fp8_experts.dequantize(down, down_scale, hidden.dtype),
    )  # fmt: skip
    scale = expected.abs().max()
    row = {}
    for name, kernels in (("fused", moe.fused_experts),
                          ("expert_major", moe.expert_major_experts)):  # fmt: skip
        got = kernels(hidden, index, weights, *fp8_layers[0]).float()
        row[f"fp8_{name}_error"] = round(((got - expected).abs().max() / scale).item(), 5)
        row[f"fp8_{name}_vs_bf16_mean"] = round(
            ((got - bf16_expected).abs().mean() / bf16_expected.abs().mean()).item(), 5
        )

        def run(kernels=kernels) -> None:
            for stored in fp8_layers:
                kernels(hidden, index, weights, *stored)

        row[f"fp8_{name}_ms"] = graph_ms(run)
        row[f"fp8_{name}_tb_per_s"] = round(touched_bytes / 2 / row[f"fp8_{name}_ms"] / 1e9, 2)

    def dequantize_all() -> None:
        for gate_up, down, gate_up_scale, down_scale in fp8_layers:
            fp8_experts.dequantize(gate_up, gate_up_scale, hidden.dtype)
            fp8_experts.dequantize(down, down_scale, hidden.dtype)

    row["fp8_dequantize_layer_ms"] = graph_ms(dequantize_all, repeats=5)
    return row


def sweep(layers, hidden, index, weights, fused: bool = False) -> dict:
    """Block sizes of the expert-major kernels (BLOCK_M, BLOCK_N, BLOCK_K, warps) or, with
    `fused`, of the per-pair kernels (BLOCK_N, BLOCK_K, warps), the other kernel at its
    default: [(ms per layer, blocks)], best first."""
    out = {}
    if fused:
        kernels = moe.fused_experts
        candidates = list(itertools.product((8, 16, 32), (128, 256, 512), (4, 8)))
    else:
        kernels = moe.expert_major_experts
        candidates = list(itertools.product((16,), (32, 64, 128), (64, 128, 256), (4, 8)))
    for kernel in ("gate_up", "down"):
        timings = []
        for blocks in candidates:
            chosen = {f"{kernel}_blocks": blocks}

            def run(chosen=chosen):
                for e in layers:
                    stored = (e.gate_up_proj, e.down_proj) if hasattr(e, "down_proj") else e
                    kernels(hidden, index, weights, *stored, **chosen)

            try:
                timings.append((round(graph_ms(run), 4), blocks))
            except Exception as exc:  # e.g. out of shared memory for a block shape
                print(f"  {kernel} {blocks}: {type(exc).__name__}")
        out[kernel] = sorted(timings)
    return out


if __name__ == "__main__":
    main()
