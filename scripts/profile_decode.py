"""Where a decode step of the batching engine spends GPU time (full-size random Gemma 4).

    python scripts/profile_decode.py --batches 1,8,64 [--prefill 4,8] [--contiguous-experts]

Prints the top kernels per batch size from torch.profiler (eager steps, kernel times are
those a CUDA graph replays), the graph-replay step time, optionally where a prefill's GPU
time goes (vision tower, text layers, attention, KV store) and where launching it spends
the CPU's (cProfile), and with --grouped-mm a
micro-benchmark of the expert layout (transposed view as stored vs contiguous).
Decode rows feed random tokens, so the routers spread them over the experts as real text does.
Prefills after the cached prefix against whole prompts, numerically: scripts/check_prefill.py.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AttentionInterface

from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import vision
from tools.bench import GpuTimer, full_size_random_engine, make_requests


def step_inputs(batch: int) -> tuple[list[int], list[int]]:
    """Random tokens at positions ~1,000 (a photo prompt plus some answer)."""
    generator = torch.Generator().manual_seed(batch)
    tokens = torch.randint(1000, 200_000, (batch,), generator=generator).tolist()
    return tokens, [1000 + i for i in range(batch)]


def step_times(engine: BatchEngine, batch: int, steps: int = 20) -> float:
    runner = engine.runner
    tokens, positions = step_inputs(batch)
    for _ in range(3):
        runner.decode(positions, tokens)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        runner.decode(positions, tokens)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps * 1000


def top_kernels(engine: BatchEngine, batch: int, limit: int) -> list[dict]:
    runner = engine.runner
    graphs, runner._graphs = runner._graphs, {}
    tokens, positions = step_inputs(batch)
    runner.decode(positions, tokens)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            runner.decode(positions, tokens)
        torch.cuda.synchronize()
    runner._graphs = graphs
    rows = []
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
        if cuda_us:
            rows.append({"name": event.key[:90], "ms_per_step": cuda_us / 3 / 1000,
                         "calls_per_step": event.count / 3})  # fmt: skip
    rows.sort(key=lambda r: -r["ms_per_step"])
    total = sum(r["ms_per_step"] for r in rows)
    return [{"name": "TOTAL kernel time", "ms_per_step": total, "calls_per_step": 0}, *rows[:limit]]


NOT_KERNELS = ("aten::", "travelbot::", "Torch-Compiled", "## Call")  # ops and regions


def kernel_table(run: Callable[[], object], limit: int) -> list[dict]:
    """GPU kernels of one call of `run`, by total time (no CPU ops)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
        if cuda_us and not event.key.startswith(NOT_KERNELS):
            rows.append({"name": event.key[:90], "cuda_ms": cuda_us / 1000, "calls": event.count})
    rows.sort(key=lambda r: -r["cuda_ms"])
    total = sum(r["cuda_ms"] for r in rows)
    return [{"name": "TOTAL kernel time", "cuda_ms": total, "calls": 0}, *rows[:limit]]


def profile_prefill(engine: BatchEngine, num_seqs: int, limit: int, prefix: bool) -> dict:
    """Wall time of one batched prefill against its kernel time, the top kernels, and the
    vision tower's kernels on their own. `prefix`: after the cached system prompt."""
    runner = engine.runner
    prepared = [engine.prepare(r) for r in make_requests(num_seqs, 1, seed=5)]
    inputs = [seq.inputs for seq in prepared]
    slots = list(range(num_seqs))
    shared = prepared[0].prefix if prefix else ()
    photo_embeddings, photo_args = vision.photo_embeddings, []
    vision.photo_embeddings = lambda *a: photo_args.append(a) or photo_embeddings(*a)
    try:
        runner.prefill(inputs, slots, shared)
    finally:
        vision.photo_embeddings = photo_embeddings
    torch.cuda.synchronize()
    started = time.perf_counter()
    runner.prefill(inputs, slots, shared)
    launch_ms = (time.perf_counter() - started) * 1000  # the CPU's part: until it returns
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - started) * 1000
    python = python_profile(lambda: runner.prefill(inputs, slots, shared), limit)
    with torch.inference_mode():
        tower = kernel_table(lambda: photo_embeddings(*photo_args[0]), limit + 40)
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        runner.prefill(inputs, slots, shared)
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        cuda_us = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
        rows.append({"name": event.key[:90], "cuda_ms": cuda_us / 1000, "calls": event.count,
                     "cpu_ms": event.cpu_time_total / 1000})  # fmt: skip
    kernels = sorted((r for r in rows if r["cuda_ms"]), key=lambda r: -r["cuda_ms"])
    ops = sorted(rows, key=lambda r: -r["cpu_ms"])
    return {
        "wall_ms": wall_ms,
        "launch_cpu_ms": launch_ms,
        "kernel_ms": sum(r["cuda_ms"] for r in kernels if not r["name"].startswith("aten::")),
        "top_kernels": kernels[:limit],
        "top_cpu_ops": ops[:limit],
        "launch_python_functions": python,
        "vision_tower_kernels": tower[: limit + 1],
        "text_kernels": without(kernels, tower)[:limit],
    }


def python_profile(run: Callable[[], object], limit: int) -> dict:
    """cProfile of launching `run` (no sync inside it unless it makes one): the functions
    with the most time of their own and the most time under them (ms, slowed by cProfile)."""
    profiler = cProfile.Profile()
    torch.cuda.synchronize()
    profiler.enable()
    run()
    profiler.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(profiler).stats  # (file, line, name) → (calls, _, own, cumulative, _)
    rows = [
        {"function": f"{Path(file).name}:{line} {name}"[:100], "calls": calls,
         "own_ms": round(own * 1000, 2), "cumulative_ms": round(cumulative * 1000, 2)}
        for (file, line, name), (calls, _, own, cumulative, _) in stats.items()
    ]  # fmt: skip
    return {
        "by_own_time": sorted(rows, key=lambda r: -r["own_ms"])[: limit + 12],
        "by_cumulative_time": sorted(rows, key=lambda r: -r["cumulative_ms"])[: limit + 22],
    }


def without(kernels: list[dict], part: list[dict]) -> list[dict]:
    """Kernel rows less a part's rows of the same names (GPU ms and calls)."""
    taken = {row["name"]: row for row in part}
    rows = []
    for row in kernels:
        if row["name"].startswith(NOT_KERNELS):
            continue
        other = taken.get(row["name"], {"cuda_ms": 0.0, "calls": 0})
        rows.append({"name": row["name"], "cuda_ms": row["cuda_ms"] - other["cuda_ms"],
                     "calls": row["calls"] - other["calls"]})  # fmt: skip
    return sorted((r for r in rows if r["cuda_ms"] > 0.01), key=lambda r: -r["cuda_ms"])


def profile_prefill_regions(
    engine: BatchEngine, num_seqs: int, prefix: bool = False
) -> dict[str, float]:
    """One prefill of `num_seqs` photo prompts: GPU ms in the vision tower, the text layers
    (without their attention), text attention, the KV copy into slots, and in all.
    `prefix`: after the system prompt's cached KV."""
    runner, model = engine.runner, engine.base.model
    prepared = [engine.prepare(r) for r in make_requests(num_seqs, 1, seed=7)]
    inputs, slots = [seq.inputs for seq in prepared], list(range(num_seqs))
    shared = prepared[0].prefix if prefix else ()
    runner.prefill(inputs, slots, shared)  # warm
    timer = GpuTimer()
    layers = list(model.model.language_model.layers)
    saved = (
        vision.photo_embeddings,
        [layer.forward for layer in layers],
        runner.cache.store_prompts,
    )
    vision.photo_embeddings = timer.wrap("vision tower", vision.photo_embeddings)
    for layer in layers:
        kind = "global" if layer.self_attn.sliding_window is None else "sliding"
        layer.forward = timer.wrap(f"text layers ({kind}), with attention", layer.forward)
    runner.cache.store_prompts = timer.wrap("KV copy into slots", runner.cache.store_prompts)
    name = model.config.get_text_config()._attn_implementation  # the engine's patch
    attention = engine.patch.attention
    AttentionInterface.register(name, timer.wrap("text attention", attention))
    try:
        torch.cuda.synchronize()
        whole = timer.wrap("whole prefill", runner.prefill)
        started = time.perf_counter()
        whole(inputs, slots, shared)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) * 1000
    finally:
        AttentionInterface.register(name, attention)
        vision.photo_embeddings, forwards, runner.cache.store_prompts = saved
        for layer, forward in zip(layers, forwards, strict=True):
            layer.forward = forward
    return {"wall_ms": round(wall_ms, 2), **timer.totals()}


@torch.inference_mode()
def check_vision(engine: BatchEngine) -> float:
    """Largest difference of packed-photo features from the padded batch's, relative to
    the largest feature (bf16 on the GPU: ~1e-2 is rounding)."""
    model = engine.base.model
    inputs = [engine.prepare(r).inputs for r in make_requests(3, 1, seed=11)]
    pixels = torch.cat([i["pixel_values"] for i in inputs]).to(model.device, model.dtype)
    positions = torch.cat([i["image_position_ids"] for i in inputs]).to(model.device)
    packed = model.model.get_image_features(pixels, positions).pooler_output
    tower = model.model.vision_tower
    saved = tower.__dict__.pop("forward"), tower.config._attn_implementation
    tower.config._attn_implementation = "sdpa"
    try:
        padded = model.model.get_image_features(pixels, positions).pooler_output
    finally:
        tower.forward, tower.config._attn_implementation = saved
    pairs = zip(packed, padded, strict=True)
    diffs = [(a.float() - b.float()).abs().max() / b.float().abs().max() for a, b in pairs]
    return float(max(diffs))


def grouped_mm_bench(tokens: int) -> dict:
    experts, hidden, inter = 128, 2816, 1408
    stored = torch.randn(experts, inter, hidden, device="cuda", dtype=torch.bfloat16)
    contiguous = stored.transpose(1, 2).contiguous()
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(0, experts, (tokens,), device="cuda").sort().values
    offs = torch.cumsum(torch.bincount(ids, minlength=experts), 0).to(torch.int32)
    out = {}
    for name, weight in (("transposed view", stored.transpose(1, 2)), ("contiguous", contiguous)):
        for _ in range(3):
            torch._grouped_mm(x, weight, offs=offs)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(50):
            torch._grouped_mm(x, weight, offs=offs)
        torch.cuda.synchronize()
        out[name] = round((time.perf_counter() - started) / 50 * 1000, 3)
    out["experts_touched"] = int((torch.bincount(ids, minlength=experts) > 0).sum())
    return out


def make_experts_contiguous(model) -> None:
    for module in model.modules():
        if type(module).__name__ == "Gemma4TextExperts" and not module.is_transposed:
            module.gate_up_proj.data = module.gate_up_proj.data.transpose(1, 2).contiguous()
            module.down_proj.data = module.down_proj.data.transpose(1, 2).contiguous()
            module.is_transposed = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--top", type=int, default=18)
    parser.add_argument("--contiguous-experts", action="store_true", help="also that layout")
    parser.add_argument("--prefill", default="", help="also profile prefills of N,M prompts")
    parser.add_argument("--grouped-mm", action="store_true", help="grouped_mm layout bench")
    parser.add_argument("--fp8-experts", action="store_true", help="then with FP8 experts")
    parser.add_argument("--out", type=Path, default=Path("bench-out/profile.json"))
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]
    base = full_size_random_engine("cuda", 280)
    base.model.set_experts_implementation("grouped_mm")
    make_requests(1, 1)
    prefills = [int(n) for n in args.prefill.split(",") if n]
    report: dict = {}
    if args.grouped_mm:
        report["grouped_mm"] = {t: grouped_mm_bench(t) for t in (8, 64, 512)}
        print(json.dumps(report["grouped_mm"], indent=1), flush=True)
    layouts = ["as stored", "contiguous"] if args.contiguous_experts else ["as stored"]
    if args.fp8_experts:
        layouts.append("fp8")  # last: quantized in place
    for layout in layouts:
        if layout == "contiguous":
            make_experts_contiguous(base.model)
        slots = max([*batches, *prefills])
        runtime = RuntimeConfig(max_slots=slots, fp8_experts=layout == "fp8")
        engine = BatchEngine(base, runtime, EnginePaths(graph_batch_sizes=tuple(batches)))
        if prefills:
            report[f"{layout}: vision packed vs padded"] = diff = check_vision(engine)
            print(f"\n== vision: packed photos vs the padded batch, max relative diff {diff:.4f}")
        for num, prefix in [(num, prefix) for num in prefills for prefix in (False, True)]:
            name = f"{layout}: prefill regions x{num}" + (
                " after the cached prefix" if prefix else ""
            )
            report[name] = regions = profile_prefill_regions(engine, num, prefix)
            print(f"\n== {name}, GPU ms by region")
            for region, ms in regions.items():
                print(f"{ms:9.2f}  {region}")
        if prefills:
            num = prefills[-1]
            result = profile_prefill(engine, num, args.top, prefix=True)
            report[f"{layout}: prefill after the cached prefix"] = result
            print(
                f"\n== {layout}: prefill of {num} after the cached prefix: wall "
                f"{result['wall_ms']:.1f} ms, CPU launch {result['launch_cpu_ms']:.1f} ms, "
                f"kernels {result['kernel_ms']:.1f} ms"
            )
            for k in result["top_kernels"]:
                print(f"{k['cuda_ms']:8.3f} ms {k['calls']:6d}x  {k['name']}")
            print("-- CPU time by op")
            for k in result["top_cpu_ops"]:
                print(f"{k['cpu_ms']:8.3f} ms {k['calls']:6d}x  {k['name']}")
            for order, functions in result["launch_python_functions"].items():
                print(f"-- launching it, Python functions {order.replace('_', ' ')} (cProfile)")
                for f in functions:
                    print(f"{f['own_ms']:9.2f} own {f['cumulative_ms']:9.2f} under "
                          f"{f['calls']:6d}x  {f['function']}")  # fmt: skip
            print("-- the vision tower's kernels alone")
            for k in result["vision_tower_kernels"]:
                print(f"{k['cuda_ms']:8.3f} ms {k['calls']:6d}x  {k['name']}")
            print("-- the rest (text layers, KV store), all kernels less the vision tower's")
            for k in result["text_kernels"]:
                print(f"{k['cuda_ms']:8.3f} ms {k['calls']:6d}x  {k['name']}")
        for batch in batches:
            graph_ms = step_times(engine, batch)
            kernels = top_kernels(engine, batch, args.top)
            report[f"{layout} x{batch}"] = {"graph_step_ms": graph_ms, "kernels": kernels}
            print(f"\n== experts {layout}, batch {batch}: graph step {graph_ms:.2f} ms", flush=True)
            for k in kernels:
                print(f"{k['ms_per_step']:8.3f} ms {k['calls_per_step']:6.0f}x  {k['name']}")
        engine.close()
        del engine
        torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
