"""Where the batching engine spends its time, from its public calls (ModelRunner.decode and
.prefill) with torch.profiler, cProfile and module hooks:

    python3 -m tools.profile_decode --full-size-random --batches 1,8,64 \\
        [--prefill 4,8] [--syncs] [--fp8-experts] [--out bench-out/profile.json]

Per batch size: the decode step's time (replaying its CUDA graph) and its top kernels
(eager steps of an engine without graphs: the kernels a graph replays). Decode rows feed
random tokens, so the routers spread them over the experts as real text does. With
`--prefill N,M`: a prefill of N photo prompts after the cached system prompt: its wall
time and the CPU's part (until launching returns), GPU time by module (the vision tower's
encoder, sliding and global decoder layers), its top kernels and CPU ops, and the Python
functions launching it spends time in (cProfile). With `--syncs`, each call site where
that prefill makes the CPU wait for the GPU (torch's sync debug mode: GPUs only).
`--fp8-experts`: all of it again with FP8 experts. On the CPU (`--tiny`) the tables list
the CPU's ops instead of kernels: that the command works, not where a GPU's time goes.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import dataclasses
import gc
import json
import pstats
import time
import traceback
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from tools.bench import load_engine, make_requests, synchronize

NOT_KERNELS = ("aten::", "travelbot::", "Torch-Compiled", "## Call")  # ops and regions


def step_inputs(engine: BatchEngine, batch: int) -> tuple[list[int], list[int]]:
    """Random tokens at positions ~1,000 (a photo prompt plus some answer)."""
    generator = torch.Generator().manual_seed(batch)
    vocab = engine.base.model.config.get_text_config().vocab_size
    tokens = torch.randint(vocab // 2, vocab, (batch,), generator=generator).tolist()
    return tokens, [1000 + i for i in range(batch)]


def step_ms(engine: BatchEngine, batch: int, steps: int) -> float:
    tokens, positions = step_inputs(engine, batch)
    for _ in range(3):
        engine.runner.decode(positions, tokens)
    synchronize(engine.base.device)
    started = time.perf_counter()
    for _ in range(steps):
        engine.runner.decode(positions, tokens)
    synchronize(engine.base.device)
    return round((time.perf_counter() - started) / steps * 1000, 3)


def top_ops(run, device: torch.device, calls: int, limit: int) -> list:
    """The GPU kernels (CPU: the CPU ops, by own time) of `calls` calls of run(), per call,
    most time first, after a TOTAL row."""
    gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            run()
        synchronize(device)
    rows = []
    for event in prof.key_averages():
        us = event.device_time_total if gpu else event.self_cpu_time_total
        if us and not (gpu and event.key.startswith(NOT_KERNELS)):
            rows.append({"name": event.key[:90], "ms": round(us / calls / 1000, 4),
                         "calls": event.count / calls})  # fmt: skip
    rows.sort(key=lambda r: -r["ms"])
    total = round(sum(r["ms"] for r in rows), 3)
    return [{"name": "TOTAL", "ms": total, "calls": 0}, *rows[:limit]]


def cpu_ops(run, device: torch.device, limit: int) -> list:
    """The CPU ops of one call of run(), by their time with what they call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
        synchronize(device)
    rows = [{"name": e.key[:90], "cpu_ms": round(e.cpu_time_total / 1000, 3), "calls": e.count}
            for e in prof.key_averages()]  # fmt: skip
    return sorted(rows, key=lambda r: -r["cpu_ms"])[:limit]


def python_profile(run, device: torch.device, limit: int) -> list:
    """cProfile of launching run() (no sync inside it unless it makes one): the functions
    with the most time under them (ms, slowed by cProfile)."""
    profiler = cProfile.Profile()
    synchronize(device)
    profiler.enable()
    run()
    profiler.disable()
    synchronize(device)
    stats = pstats.Stats(profiler).stats  # (file, line, name) → (calls, _, own, under, _)
    rows = [{"function": f"{Path(file).name}:{line} {name}"[:100], "calls": calls,
             "own_ms": round(own * 1000, 2), "cumulative_ms": round(under * 1000, 2)}
            for (file, line, name), (calls, _, own, under, _) in stats.items()]  # fmt: skip
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:limit]


class ModuleTimes:
    """Time in modules, by name, from forward hooks (CUDA events on a GPU, no sync until
    read; the wall clock on the CPU, where the work is done when the call returns)."""

    def __init__(self, device: torch.device) -> None:
        self.gpu = device.type == "cuda"
        self.spans: list[tuple[str, object, object]] = []
        self.handles: list = []

    def _now(self):
        if not self.gpu:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def watch(self, name: str, module: torch.nn.Module) -> None:
        started: list = []
        self.handles.append(module.register_forward_pre_hook(
            lambda *_: started.append(self._now())))  # fmt: skip
        self.handles.append(module.register_forward_hook(
            lambda *_: self.spans.append((name, started.pop(), self._now()))))  # fmt: skip

    def totals(self) -> dict[str, float]:
        for handle in self.handles:
            handle.remove()
        if self.gpu:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for name, start, end in self.spans:
            ms = start.elapsed_time(end) if self.gpu else (end - start) * 1000
            out[name] = round(out.get(name, 0.0) + ms, 3)
        return out


def prefill_profile(engine: BatchEngine, count: int, limit: int, syncs: bool) -> dict:
    """One prefill of `count` photo prompts after the cached system prompt."""
    device, model = engine.base.device, engine.base.model
    prepared = [engine.prepare(r) for r in make_requests(count, 1, seed=5)]
    inputs, slots, prefix = [seq.inputs for seq in prepared], list(range(count)), prepared[0].prefix

    def run():
        return engine.runner.prefill(inputs, slots, prefix)

    run()  # the prefix cached, the shapes seen
    synchronize(device)
    times = ModuleTimes(device)
    times.watch("vision tower encoder", model.model.vision_tower.encoder)
    for layer in model.model.language_model.layers:
        kind = "global" if layer.self_attn.sliding_window is None else "sliding"
        times.watch(f"decoder layers ({kind})", layer)
    started = time.perf_counter()
    run()
    launch_ms = (time.perf_counter() - started) * 1000
    synchronize(device)
    wall_ms = (time.perf_counter() - started) * 1000
    report = {"wall_ms": round(wall_ms, 2), "launch_cpu_ms": round(launch_ms, 2),
              "by_module_ms": times.totals(),
              "top_kernels": top_ops(run, device, 1, limit),
              "top_cpu_ops": cpu_ops(run, device, limit),
              "launch_python_functions": python_profile(run, device, limit + 10)}  # fmt: skip
    if syncs:
        report["syncs"] = sync_sites(run) if device.type == "cuda" else "needs CUDA"
    return report


def sync_sites(run) -> dict[str, int]:
    """Call sites (project and transformers frames) of each op that made the CPU wait."""
    sites: collections.Counter[str] = collections.Counter()

    def record(message, *_args, **_kwargs) -> None:
        frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}"
                  for f in traceback.extract_stack()[:-2]
                  if "/inference/" in f.filename or "/transformers/" in f.filename]  # fmt: skip
        sites[f"{str(message)[:60]} @ " + " < ".join(reversed(frames[-4:]))] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return dict(sites.most_common())


def print_table(title: str, rows: list, value: str) -> None:
    print(f"\n== {title}")
    for row in rows:
        name = row.get("name", row.get("function"))
        print(f"{row[value]:10.3f} ms {row['calls']:8.1f}x  {name}")


def profile_way(base, name: str, args: argparse.Namespace, report: dict) -> None:
    batches = [int(b) for b in args.batches.split(",") if b]
    prefills = [int(n) for n in args.prefill.split(",") if n]
    runtime = RuntimeConfig(  # no photo cache: each prefill runs the vision tower
        max_slots=max([*batches, *prefills]), fp8_experts=name == "fp8", photo_cache_bytes=0
    )
    engine = BatchEngine(base, dataclasses.replace(runtime, cuda_graphs=False))
    for batch in batches:
        tokens, positions = step_inputs(engine, batch)
        kernels = top_ops(
            lambda t=tokens, p=positions: engine.runner.decode(p, t), base.device, 3, args.top
        )
        report[f"{name} x{batch}"] = {"kernels": kernels}
        print_table(f"{name}, decode step of {batch}: top kernels per step", kernels, "ms")
    for count in prefills:
        result = report[f"{name} prefill x{count}"] = prefill_profile(
            engine, count, args.top, args.syncs
        )
        print(f"\n== {name}, prefill of {count} after the cached prefix: wall "
              f"{result['wall_ms']} ms, CPU launch {result['launch_cpu_ms']} ms, by module "
              f"{json.dumps(result['by_module_ms'])}")  # fmt: skip
        print_table("top kernels", result["top_kernels"], "ms")
        print_table("CPU ops", result["top_cpu_ops"], "cpu_ms")
        print_table("launching it: Python (cProfile)", result["launch_python_functions"],
                    "cumulative_ms")  # fmt: skip
        if args.syncs:
            print(f"\n== syncs\n{json.dumps(result['syncs'], indent=1)}")
    if base.device.type == "cuda":  # the steps as served: CUDA graphs
        engine.close()
        del engine
        free(base.device)
        engine = BatchEngine(base, runtime, EnginePaths(graph_batch_sizes=tuple(batches)))
    for batch in batches:
        ms = report[f"{name} x{batch}"]["step_ms"] = step_ms(engine, batch, args.steps)
        print(f"\n== {name}, decode step of {batch}: {ms} ms", flush=True)
    engine.close()


def free(device: torch.device) -> None:
    """Free a closed engine's KV cache and graphs (its last reference dropped) before the
    next engine is built."""
    gc.collect()  # it may sit in reference cycles until the collector runs
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    from tools.bench_args import add_model_arguments

    parser = argparse.ArgumentParser(
        prog="python3 -m tools.profile_decode", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_model_arguments(parser)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--steps", type=int, default=20, help="timed decode steps")
    parser.add_argument("--top", type=int, default=18)
    parser.add_argument("--prefill", default="", help="also profile prefills of N,M prompts")
    parser.add_argument("--syncs", action="store_true", help="where the prefill syncs (GPU)")
    parser.add_argument("--fp8-experts", action="store_true", help="then with FP8 experts")
    parser.add_argument("--out", type=Path, default=Path("bench-out/profile.json"))
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_engine(args)
    report: dict = {"device": str(base.device)}
    for name in ("bf16", "fp8") if args.fp8_experts else ("bf16",):  # FP8: quantized in place
        profile_way(base, name, args, report)
        free(base.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
