"""Where the GPU time of one prefill of N photo prompts (after the cached system prompt) goes,
kernel by kernel: a torch.profiler trace with the vision tower, each text layer and the KV
copy marked; every kernel is counted in the innermost mark around the CPU call that
launched it (else "outside the marks", by the CPU op that launched it). Also the GPU's
idle gaps and what the CPU launched after each.

    python scripts/trace_prefill.py [--photos 8] [--out bench-out/prefill-trace.json]
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections import defaultdict
from functools import wraps
from pathlib import Path

import torch
from gpu_prefill import engine_and_photo_prompts
from torch.profiler import ProfilerActivity, profile, record_function

from inference.runtime.gemma4 import vision

GPU_KINDS = ("kernel", "gpu_memcpy", "gpu_memset")
OUTSIDE = "outside the marks"


def marked(name: str, fn):
    @wraps(fn)
    def run(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)

    return run


def mark_regions(engine) -> None:
    model = engine.base.model
    tower = model.model.vision_tower
    tower.forward = marked("vision tower", tower.forward)  # when transformers merges photos
    vision.photo_embeddings = marked("vision tower", vision.photo_embeddings)  # when we do
    for layer in model.model.language_model.layers:
        kind = "global" if layer.self_attn.sliding_window is None else "sliding"
        layer.forward = marked(f"text layer ({kind})", layer.forward)
    cache = engine.runner.cache
    cache.store_prompts = marked("KV copy into slots", cache.store_prompts)


def innermost(spans: list[tuple[float, float, str]], ts: float) -> str | None:
    """Name of the shortest span containing ts (spans sorted by start)."""
    best = None
    for start, end, name in spans[: bisect.bisect_right(spans, (ts, float("inf"), ""))]:
        if start <= ts <= end and (best is None or end - start < best[1] - best[0]):
            best = (start, end, name)
    return best[2] if best else None


def analyze(trace: dict, top: int) -> dict:
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    launches = {
        e["args"]["correlation"]: e["ts"]
        for e in events
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})
    }
    marks = sorted(
        (e["ts"], e["ts"] + e["dur"], e["name"])
        for e in events
        if e.get("cat") == "user_annotation" and not e["name"].startswith("ProfilerStep")
    )
    ops = sorted(
        (e["ts"], e["ts"] + e["dur"], e["name"]) for e in events if e.get("cat") == "cpu_op"
    )
    gpu = sorted((e for e in events if e.get("cat") in GPU_KINDS), key=lambda e: e["ts"])
    regions: dict[str, float] = defaultdict(float)
    kernels_by_region: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    outside_ops: dict[str, float] = defaultdict(float)
    gaps = []
    busy_end = gpu[0]["ts"]
    for event in gpu:
        launched = launches.get(event["args"].get("correlation"))
        region = OUTSIDE
        if launched is not None:
            region = innermost(marks, launched) or OUTSIDE
        if region == "whole prefill":
            region = OUTSIDE
        ms = event["dur"] / 1000
        regions[region] += ms
        kernels_by_region[region][event["name"][:80]] += ms
        if region == OUTSIDE and launched is not None:
            outside_ops[innermost(ops, launched) or "?"] += ms
        if event["ts"] > busy_end:
            gaps.append({
                "idle_ms": round((event["ts"] - busy_end) / 1000, 3),
                "next_kernel": event["name"][:60],
                "launched_in": region,
                "by_op": innermost(ops, launched) if launched is not None else None,
            })  # fmt: skip
        busy_end = max(busy_end, event["ts"] + event["dur"])
    span_ms = (busy_end - gpu[0]["ts"]) / 1000
    idle_ms = sum(g["idle_ms"] for g in gaps)
    return {
        "gpu_span_ms": round(span_ms, 2),
        "gpu_idle_ms": round(idle_ms, 2),
        "regions_ms": {k: round(v, 2) for k, v in sorted(regions.items(), key=lambda x: -x[1])},
        "top_kernels": {
            region: sorted(((round(ms, 3), name) for name, ms in kernels.items()), reverse=True)[
                :top
            ]
            for region, kernels in kernels_by_region.items()
        },
        "outside_by_op_ms": dict(
            sorted(((k, round(v, 3)) for k, v in outside_ops.items()), key=lambda x: -x[1])[:top]
        ),
        "largest_gaps": sorted(gaps, key=lambda g: -g["idle_ms"])[:top],
    }


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("bench-out/prefill-trace.json"))
    args = parser.parse_args()
    engine, inputs, prefix = engine_and_photo_prompts(args.photos)
    runner, slots = engine.runner, list(range(args.photos))
    for _ in range(2):
        runner.prefill(inputs, slots, prefix)
    mark_regions(engine)
    prefill = marked("whole prefill", runner.prefill)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        prefill(inputs, slots, prefix)
        torch.cuda.synchronize()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    raw = args.out.with_suffix(".trace.json")
    prof.export_chrome_trace(str(raw))
    report = analyze(json.loads(raw.read_text()), args.top)
    report["photos"] = args.photos
    args.out.write_text(json.dumps(report, indent=1))
    print(f"GPU span {report['gpu_span_ms']} ms, idle {report['gpu_idle_ms']} ms")
    for region, ms in report["regions_ms"].items():
        print(f"{ms:9.2f} ms  {region}")
        for kernel_ms, name in report["top_kernels"][region][: args.top]:
            print(f"      {kernel_ms:8.3f}  {name}")
    print("-- outside the marks, by the CPU op that launched it")
    for op, ms in report["outside_by_op_ms"].items():
        print(f"{ms:9.3f} ms  {op}")
    print("-- largest idle gaps")
    for gap in report["largest_gaps"]:
        print(json.dumps(gap))


if __name__ == "__main__":
    main()
